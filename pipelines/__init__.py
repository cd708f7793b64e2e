"""Data sources, augmentation and training pipelines (TensorFlow)."""
