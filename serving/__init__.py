"""Export for TensorFlow Serving, clients and a local TF-Serving-compatible server."""
