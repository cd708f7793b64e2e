"""Tiny SavedModels with hand-picked signatures (float, int, string, several inputs, one output), for the
conformance tests of TF Serving's JSON typing and response formats. Built with tf.Module, no training."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2


class Toy(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def doubled(self, x):
        return {"y": x * 2.0}  # one output: TF Serving's REST answers it without its name

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
    def ints(self, n):
        return {"twice": n * 2}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.int64, name="b"),
                                  tf.TensorSpec([None], tf.string, name="s")])
    def pair(self, a, b, s):
        return {"sum": a + tf.cast(b, tf.float32), "tag": s, "tag_bytes": s}


def toy(base_path: str, version: int = 1, warmup_records: int = 0) -> str:
    """Write base_path/<version> with signatures serving_default (x -> y), ints (n -> twice) and pair."""
    module = Toy()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(module, path, signatures={"serving_default": module.doubled, "ints": module.ints,
                                                  "pair": module.pair})
    if warmup_records:
        os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(path, "assets.extra", "tf_serving_warmup_requests")) as writer:
            for i in range(warmup_records):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "toy"
                request.inputs["x"].CopyFrom(tf.make_tensor_proto([[float(i), 1.0]], dtype=tf.float32))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
    return path
