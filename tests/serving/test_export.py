"""Export for TF Serving: both signatures reproduce the model, versions, atomicity, warm-up, mixed precision."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

import kcnn
from pipelines.preprocess import Preprocessing, preprocess_images
from serving import export as ex

CLASSES = ["circle", "square", "triangle"]
SPEC = Preprocessing(image_size=32, channels=3)


@pytest.fixture(scope="module")
def model():
    return kcnn.build("lenet5", num_classes=3, input_shape=(32, 32, 3))


def images(count=4, height=40, width=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def expected_top1(model, batch):
    return model.predict(preprocess_images(tf.constant(batch), SPEC), verbose=0).argmax(axis=1)


def test_both_signatures_give_the_models_top1_on_tensors_jpeg_and_png(model, tmp_path):
    result = ex.export(model, str(tmp_path / "shapes"), class_names=CLASSES, preprocessing=SPEC, top_k=2)
    assert result.version == 1 and result.path == str(tmp_path / "shapes" / "1")
    loaded = tf.saved_model.load(result.path)
    assert set(loaded.signatures) == {"serving_default", "predict_image_bytes"}
    batch = images()
    out = loaded.signatures["serving_default"](images=tf.constant(batch))
    assert set(out) == {"probabilities", "classes", "scores", "labels"}
    assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape == (4, 3)
    assert out["classes"].dtype == tf.int32 and out["classes"].shape == (4, 2)
    np.testing.assert_array_equal(out["classes"].numpy()[:, 0], expected_top1(model, batch))
    np.testing.assert_allclose(out["scores"].numpy()[:, 0], out["probabilities"].numpy().max(axis=1), rtol=1e-6)
    assert [label.decode() for label in out["labels"].numpy()[:, 0]] == [CLASSES[c] for c in
                                                                         out["classes"].numpy()[:, 0]]
    for encode in (tf.io.encode_png, tf.io.encode_jpeg):
        encoded = [encode(image).numpy() for image in batch]
        decoded = np.stack([tf.io.decode_image(e, channels=3).numpy() for e in encoded])
        from_bytes = loaded.signatures["predict_image_bytes"](image_bytes=tf.constant(encoded))
        np.testing.assert_array_equal(from_bytes["classes"].numpy()[:, 0], expected_top1(model, decoded))
    # Any image size is resized in the graph.
    small = images(2, 20, 17, seed=3)
    resized = loaded.signatures["serving_default"](images=tf.constant(small))
    np.testing.assert_array_equal(resized["classes"].numpy()[:, 0], expected_top1(model, small))
    assert result.max_abs_difference < 1e-4


def test_signatures_are_listed_as_saved_model_cli_does(model, tmp_path):
    result = ex.export(model, str(tmp_path / "m"), class_names=CLASSES, preprocessing=SPEC)
    text = result.signatures
    assert "signature_def['serving_default']:" in text and "signature_def['predict_image_bytes']:" in text
    assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, -1, -1, 3)" in text
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in text
    assert "outputs['labels'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1, 3)" in text
    assert "Method name is: tensorflow/serving/predict" in text


def test_versions_increment_refuse_to_overwrite_and_overwrite_when_told(model, tmp_path):
    base = str(tmp_path / "m")
    assert ex.export(model, base, class_names=CLASSES, preprocessing=SPEC, verify=False).version == 1
    assert ex.export(model, base, class_names=CLASSES, preprocessing=SPEC, verify=False).version == 2
    assert ex.versions(base) == [1, 2]
    with pytest.raises(FileExistsError) as error:
        ex.export(model, base, class_names=CLASSES, preprocessing=SPEC, version=2)
    assert str(error.value) == (f"{base}/2 already exists; pass a new version (--version N) or overwrite=True "
                                "(--overwrite) to replace it")
    assert ex.export(model, base, class_names=CLASSES, preprocessing=SPEC, version=2, overwrite=True,
                     verify=False).version == 2
    assert ex.export(model, base, class_names=CLASSES, preprocessing=SPEC, version=7, verify=False).version == 7
    assert sorted(os.listdir(base)) == ["1", "2", "7"]


def test_an_interrupted_export_leaves_no_integer_directory(model, tmp_path, monkeypatch):
    base = tmp_path / "m"
    staged = []

    def interrupted(_model, path, *args):
        staged.append(os.path.basename(path))
        assert os.path.exists(os.path.join(path, "saved_model.pb"))  # the SavedModel was fully written...
        raise KeyboardInterrupt  # ...and the process stopped before the rename

    monkeypatch.setattr(ex, "_verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.export(model, str(base), class_names=CLASSES, preprocessing=SPEC)
    assert not staged[0].isdigit() and staged[0].startswith(".kcnn-export-1-")
    assert ex.versions(str(base)) == []
    assert os.listdir(base) == []


def test_warmup_records_cover_both_signatures(model, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    result = ex.export(model, str(tmp_path / "shapes"), class_names=CLASSES, preprocessing=SPEC)
    path = os.path.join(result.path, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert len(logs) == 4  # batches of 1 and 2 images, for each of the two signatures
    signatures = {(log.predict_log.request.model_spec.signature_name,
                   tuple(log.predict_log.request.inputs)) for log in logs}
    assert signatures == {("serving_default", ("images",)), ("predict_image_bytes", ("image_bytes",))}
    assert {log.predict_log.request.model_spec.name for log in logs} == {"shapes"}
    loaded = tf.saved_model.load(result.path)
    for log in logs:  # every warm-up request is a valid request for its signature
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        loaded.signatures[request.model_spec.signature_name](**{k: tf.constant(v) for k, v in inputs.items()})
    with open(os.path.join(result.path, "assets.extra", "class_names.txt")) as handle:
        assert handle.read().split() == CLASSES


def test_mixed_precision_model_exports_float32_outputs(mixed_precision, tmp_path):
    model = kcnn.build("squeezenet1_1", num_classes=3, input_shape=(32, 32, 3))
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    result = ex.export(model, str(tmp_path / "mp"), class_names=CLASSES, preprocessing=SPEC, image_dtype="float32")
    loaded = tf.saved_model.load(result.path)
    batch = images().astype(np.float32)
    out = loaded.signatures["serving_default"](images=tf.constant(batch))
    assert out["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-3)
    assert "dtype: DT_FLOAT\n        shape: (-1, -1, -1, 3)" in result.signatures


def test_bad_export_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="class_names has 2 names but the model predicts 3 classes"):
        ex.export(model, str(tmp_path), class_names=["a", "b"], preprocessing=SPEC)
    with pytest.raises(ValueError, match="image_dtype must be one of uint8, float32"):
        ex.export(model, str(tmp_path), class_names=CLASSES, preprocessing=SPEC, image_dtype="int32")
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_litert_conversion_prints_nothing(capfd):
    """TF's converter saves through Keras' export, which prints every endpoint and captured variable (64 lines for
    a ResNet-18); `kcnn export --format litert` prints its own summary only."""
    from serving import litert

    model = kcnn.build("lenet5", num_classes=3, input_shape=(32, 32, 1))
    content = litert.convert(model, [], int8=False)
    assert content[4:8] == b"TFL3"  # the flatbuffer's file identifier
    assert capfd.readouterr().out == ""


def _op_types(path: str) -> set:
    """Every op type in a SavedModel's graph and function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    graph = proto.meta_graphs[0].graph_def
    return {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}


def test_export_folds_batch_norm_into_the_convolutions_and_still_matches_the_model(tmp_path):
    """issue 28: the exported graph kept every batch norm as separate ops; folded, the signatures run convolutions
    with a bias only and still reproduce the Keras model (export's own verification)."""
    import keras
    from conftest import randomise_statistics


    keras.utils.set_random_seed(0)
    model = randomise_statistics(kcnn.build("convnet", num_classes=3, input_shape=(32, 32, 3)))
    folded = ex.export(model, str(tmp_path / "folded"), class_names=CLASSES, preprocessing=SPEC, warmup=False)
    kept = ex.export(model, str(tmp_path / "kept"), class_names=CLASSES, preprocessing=SPEC, warmup=False,
                     fold_bn=False)
    # Keras 3 writes batch norm as primitive ops, one Rsqrt of the variance per layer: gone once folded.
    assert "Rsqrt" not in _op_types(folded.path) and "Rsqrt" in _op_types(kept.path)
    assert "BiasAdd" in _op_types(folded.path)  # the folded shift, as each convolution's bias
    assert folded.max_abs_difference < 1e-5 and kept.max_abs_difference < 1e-5
    batch = tf.constant(images())
    a = tf.saved_model.load(folded.path).signatures["serving_default"](images=batch)["probabilities"].numpy()
    b = tf.saved_model.load(kept.path).signatures["serving_default"](images=batch)["probabilities"].numpy()
    assert np.abs(a - b).max() < 1e-5


def _session_outputs(path: str, batch: np.ndarray) -> dict:
    """serving_default run as TF Serving runs it: the MetaGraph loaded into a Session (SavedModelBundle,
    tensorflow/cc/saved_model/loader.cc), the signature's tensors fetched by name."""
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta_graph.signature_def["serving_default"]
        names = sorted(signature.outputs)
        values = session.run([signature.outputs[n].name for n in names], {signature.inputs["images"].name: batch})
    return dict(zip(names, values))


def test_export_freezes_the_weights_into_constants_that_a_session_loads_as_tf_serving_does(model, tmp_path):
    """issue 28: the signatures read every weight through a variable; frozen into constants (faster on TensorFlow's
    CPU convolutions, benchmarks/bench_export.py) they give the same outputs, in TF2 and in a TF1 Session."""
    frozen = ex.export(model, str(tmp_path / "frozen"), class_names=CLASSES, preprocessing=SPEC, warmup=False)
    kept = ex.export(model, str(tmp_path / "kept"), class_names=CLASSES, preprocessing=SPEC, warmup=False,
                     freeze=False)
    assert not {"VarHandleOp", "ReadVariableOp"} & _op_types(frozen.path)
    assert {"VarHandleOp", "ReadVariableOp"} <= _op_types(kept.path)
    batch = images(3)
    expected = model.predict(preprocess_images(tf.constant(batch), SPEC), verbose=0)
    for path in (frozen.path, kept.path):
        served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(batch))
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
        in_session = _session_outputs(path, batch)
        np.testing.assert_allclose(in_session["probabilities"], expected, atol=1e-5)
        np.testing.assert_array_equal(in_session["classes"], served["classes"].numpy())


def test_weights_too_large_for_one_protobuf_stay_variables(model, tmp_path, monkeypatch):
    # saved_model.pb is a single protobuf (2 GiB at most): past FREEZE_MAX_BYTES the weights are not frozen.
    assert ex.weight_bytes(model) == model.count_params() * 4
    monkeypatch.setattr(ex, "FREEZE_MAX_BYTES", ex.weight_bytes(model) - 1)
    result = ex.export(model, str(tmp_path / "m"), class_names=CLASSES, preprocessing=SPEC, warmup=False)
    assert "VarHandleOp" in _op_types(result.path) and result.max_abs_difference < 1e-5


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_resize_to_the_same_size_is_skipped_and_changes_nothing(method, dtype):
    from pipelines.preprocess import resize

    batch = tf.constant(images(2, 32, 32).astype(dtype))
    reference = tf.image.resize(batch, [32, 32], method=method, antialias=method == "bilinear")
    same = resize(batch, 32, 32, method=method)
    assert same.dtype == reference.dtype and same.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(same.numpy(), reference.numpy())
    other = resize(batch, 20, 24, method=method)
    np.testing.assert_array_equal(
        other.numpy(), tf.image.resize(batch, [20, 24], method=method, antialias=method == "bilinear").numpy())
    traced = tf.function(lambda x: resize(x, 32, 32, method=method)).get_concrete_function(
        tf.TensorSpec([None, None, None, 3], dtype))
    assert traced.output_shapes.as_list() == [None, 32, 32, 3]
