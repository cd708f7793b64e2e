"""Image classification: one label per image, categorical cross-entropy, top-1 and top-5 accuracy.

Exported signatures return ``probabilities`` float32 ``[batch, classes]``, ``classes``
int32 ``[batch, top_k]``, ``scores`` float32 ``[batch, top_k]`` and ``labels`` string
``[batch, top_k]``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from pipelines.tasks.base import TASKS, Endpoint, Task, call_signatures, check_close, sample_images


class Classification(Task):
    name = "classification"
    target = "label"
    train_metric = "accuracy"
    monitor = "accuracy"
    validation_extras = ("val_top5_accuracy",)
    served_outputs = ("probabilities", "classes", "scores", "labels")

    def check_model(self, model_config):
        return check_backbone_model(model_config)

    def build_model(self, model_config, num_classes, input_shape):
        from pipelines.finetune import build_model

        return build_model(model_config, num_classes, input_shape)

    def loss(self, targets, outputs, options, config):
        smoothing = config.optimizer.label_smoothing if config is not None else 0.0
        return keras.losses.categorical_crossentropy(_one_hot(targets, outputs), outputs, label_smoothing=smoothing)

    def train_score(self, targets, outputs, options=None):
        truth = tf.argmax(_one_hot(targets, outputs), -1)
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(outputs, -1), truth), tf.float32))

    def evaluation_sums(self, targets, outputs, num_classes, options=None):
        one_hot = _one_hot(targets, outputs)
        truth = tf.argmax(one_hot, -1, output_type=tf.int32)
        predicted = tf.argmax(outputs, -1, output_type=tf.int32)
        # top_k, not in_top_k: in_top_k counts every tied class as a hit, so a model that outputs uniform
        # probabilities would score 100% top-5.
        best = tf.math.top_k(outputs, k=min(5, num_classes)).indices
        return {
            "loss": tf.cast(tf.reduce_sum(keras.losses.categorical_crossentropy(one_hot, outputs)), tf.float32),
            "correct": tf.reduce_sum(tf.cast(tf.equal(predicted, truth), tf.float32)),
            "top5": tf.reduce_sum(tf.cast(tf.reduce_any(tf.equal(best, truth[:, None]), -1), tf.float32)),
            "count": tf.cast(tf.shape(outputs)[0], tf.float32),
            "confusion": tf.math.confusion_matrix(truth, predicted, num_classes, dtype=tf.float32),
        }

    def evaluation_result(self, sums, keep_predictions, num_classes=None):
        count = max(float(sums.get("count", 0.0)), 1.0)
        result = {"loss": float(sums.get("loss", 0.0)) / count, "accuracy": float(sums.get("correct", 0.0)) / count,
                  "top5_accuracy": float(sums.get("top5", 0.0)) / count, "count": int(sums.get("count", 0))}
        if keep_predictions:
            result["confusion_matrix"] = np.asarray(sums["confusion"], np.int64) if "confusion" in sums else None
        return result

    def finish(self, run, model, history, test, train_info, spec):
        from pipelines import report

        metrics = {"test_accuracy": test["accuracy"], "test_top5_accuracy": test["top5_accuracy"],
                   "test_loss": test["loss"],
                   "val_accuracy": max((h["val_accuracy"] for h in history), default=float("nan"))}
        if run is not None:
            report.plot_confusion_matrix(test["confusion_matrix"], list(train_info.class_names),
                                         run.plot("confusion_matrix"))
        return metrics

    def summary(self, metrics):
        line = f"test accuracy {metrics['test_accuracy']:.4f}"
        if metrics.get("num_classes", 6) > 5:  # with 5 classes or fewer every top-5 guess is right
            line += f" (top-5 {metrics['test_top5_accuracy']:.4f})"
        return line

    def evaluate_run(self, run_dir, *, tta="none", split=None, flip=None):
        from pipelines.evaluate import evaluate_classification

        return evaluate_classification(run_dir, tta=tta, split=split, flip=flip)

    def format_evaluation(self, result):
        from pipelines.evaluate import format_classification

        return format_classification(result)

    # ------------------------------------------------------------------------ export
    def serving_endpoints(self, model, preprocessing, metadata, max_pixels):
        from pipelines.preprocess import preprocess_encoded, preprocess_images

        names = tf.constant(metadata["class_names"])
        top_k = metadata["top_k"]

        def outputs(inputs):
            probabilities = tf.cast(model(inputs, training=False), tf.float32)
            top = tf.math.top_k(probabilities, k=top_k)
            classes = tf.cast(top.indices, tf.int32)
            return {"probabilities": probabilities, "classes": classes, "scores": top.values,
                    "labels": tf.gather(names, classes)}

        def predict_images(images):
            return outputs(preprocess_images(images, preprocessing))

        def predict_image_bytes(image_bytes):
            size = preprocessing.image_size
            images = tf.map_fn(lambda encoded: preprocess_encoded(encoded, preprocessing, max_pixels=max_pixels),
                               image_bytes,
                               fn_output_signature=tf.TensorSpec([size, size, preprocessing.channels], tf.float32))
            return outputs(images)

        return {"images": Endpoint(predict_images, tf.TensorSpec([None, None, None, 3], metadata["image_dtype"])),
                "image_bytes": Endpoint(predict_image_bytes, tf.TensorSpec([None], tf.string))}

    def verify_export(self, model, loaded, preprocessing, metadata):
        from pipelines.preprocess import preprocess_images

        images = sample_images(preprocessing, 3, seed=1)
        expected = model.predict(preprocess_images(tf.constant(images), preprocessing), verbose=0)
        served = call_signatures(loaded, images, metadata["image_dtype"])
        return check_close(model, {name: result["probabilities"].numpy() for name, result in served.items()},
                           expected)

    def write_predictions(self, outputs, images, out_dir):
        raise ValueError("this model answers with class labels, not images; leave out --out-dir to print its "
                         "predictions")

    def report_sections(self, run, *, examples: int = 8):
        from pipelines import report as plots
        from pipelines.run_report import figure, plot_bytes, table, unless_no_conv, wrong_section

        labels, predictions, names, shown = test_predictions(run, keep_wrong=examples)
        names = run.class_names or names
        matrix = plots.confusion_matrix(labels, predictions, len(names))
        scores = plots.per_class_scores(matrix, names)
        confusion = plot_bytes(run, "confusion", plots.plot_confusion, labels, predictions, names)
        accuracy = float(np.mean(labels == predictions)) if len(labels) else float("nan")
        return [
            ("summary", None, [("test images", len(labels)), ("test accuracy", f"{accuracy:.4f}")]),
            ("confusion", "Confusion matrix", figure(confusion, "confusion matrix")),
            ("per-class", "Per-class precision, recall and F1",
             table(("class", "precision", "recall", "F1", "support"),
                   [(r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"])
                    for r in scores])),
            ("wrong", "Where it looked: the test images it got wrong or found hardest, with Grad-CAM",
             unless_no_conv(wrong_section, run.model, shown, names)),
        ]


def _one_hot(targets, outputs):
    """Integer labels to one-hot rows (mixed labels are already rows)."""
    return targets if targets.shape.rank == 2 else tf.one_hot(targets, tf.shape(outputs)[-1])


def check_backbone_model(model_config):
    """A backbone-plus-head model section: the backbone's builder; unregistered names raise with the closest."""
    import kcnn

    builder = kcnn.backbones.BACKBONES.entry(model_config.name).fn
    if model_config.head is not None:
        kcnn.heads.HEADS.entry(model_config.head)
    return builder


PREDICTION_BATCH = 128  # images per eager call when the report scores the test split


def test_predictions(run, *, keep_wrong: int = 8):
    """Labels, predictions, and the report's examples (confidence, index, image, label, guess): the
    ``keep_wrong`` most confidently wrong test images, then, when fewer are wrong, the least confident
    right ones up to ``keep_wrong`` (a run that gets every test image right still shows where it looked)."""
    import heapq

    from pipelines.data import DataSpec, make_dataset
    from pipelines.run_dir import RunDir

    spec = DataSpec.from_config(run.config.data, preprocessing=RunDir(run.path).preprocessing())
    # One eager pass: large batches (whatever the training batch was) keep the per-call overhead small.
    spec = spec.evaluation(cache=False, batch_size=max(spec.batch_size, PREDICTION_BATCH))
    dataset, info = make_dataset(spec, spec.test_split)
    labels, predictions, wrong, unsure, seen = [], [], [], [], 0
    for images, batch_labels in dataset:
        probabilities = np.asarray(run.model(images, training=False))  # eager: no tracing for one pass
        truth = batch_labels.numpy()
        guess = probabilities.argmax(-1)
        labels.append(truth)
        predictions.append(guess)
        for i in range(len(truth)):
            confidence = float(probabilities[i, guess[i]])
            # Heaps of the keep_wrong largest keys: the most confident wrong, the least confident right.
            heap, key = (wrong, confidence) if guess[i] != truth[i] else (unsure, -confidence)
            if keep_wrong and (len(heap) < keep_wrong or key > heap[0][0]):  # ties: the index decides
                example = (confidence, seen + i, images[i].numpy(), int(truth[i]), int(guess[i]))
                (heapq.heappush if len(heap) < keep_wrong else heapq.heappushpop)(heap, (key, seen + i, example))
        seen += len(truth)
    chosen = sorted(wrong, reverse=True) + sorted(unsure, reverse=True)[:max(0, keep_wrong - len(wrong))]
    examples = [example for _, _, example in chosen]
    return np.concatenate(labels), np.concatenate(predictions), list(info.class_names), examples


TASKS.register("classification")(Classification())
