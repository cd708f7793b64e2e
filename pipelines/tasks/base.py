"""The task contract: one registered object per task that training, evaluation, export, predict and the report ask.

A config's ``model.task`` names a task (``classification`` by default). The task
declares, in one place, everything that differs between tasks:

- ``target``: what the data pipeline yields beside the images (``make_dataset``'s
  ``DataSpec.target``), and ``datasets``, the pipeline itself;
- ``options``: the ``model.task_options`` keys it takes, with their defaults;
- ``check_model`` and ``build_model``: the registry the model name is looked up in
  and the model the run trains;
- ``loss`` (per example, averaged over the global batch by the training step) and
  ``train_score`` (a per-example figure summed over the batch: the training metric);
- ``bind``: the options made the model's (what the loss and evaluation need from the model
  itself, such as a detector's locations);
- ``evaluation_sums`` (tensors summed over batches and replicas, or, for the keys in
  ``gathered``, concatenated) and ``evaluation_result`` (the figures made from them):
  validation and test;
- ``monitor``: the validation figure (higher is better) that picks ``best.keras``
  and drives early stopping; ``history_fields``: the columns of ``history.csv``;
- ``finish``: the test figures of ``metrics.json`` and the plots of a finished run;
- ``serving_endpoints`` and ``verify_export``: the exported signatures, in TensorFlow
  ops that TF Serving runs, and the check that they reproduce the Keras model;
- ``served_outputs``: the output names a client recognises the task by, and
  ``write_predictions``: what ``kcnn predict`` prints and writes;
- ``report_sections``: the task's part of ``report.html``.

The task modules hold only what is theirs; the loop, the evaluator, the exporter and
the report page are generic and never branch on a task's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from kcnn.registry import Registry

TASKS = Registry("task")
DEFAULT_TASK = "classification"


@dataclass(frozen=True)
class Endpoint:
    """One exported signature: ``function(input) -> dict of outputs`` and its input's TensorSpec."""

    function: object
    input_spec: object


class Task:
    """The base every registered task extends; see the module docstring for what each member is for."""

    name = ""
    target = "label"
    options: dict = {}
    train_metric = "accuracy"
    monitor = "accuracy"
    validation_extras: tuple = ()
    served_outputs: tuple = ()
    gathered: tuple = ()  # evaluation_sums keys concatenated over batches and replicas instead of summed

    # --------------------------------------------------------------- configuration
    def resolve_options(self, given: dict) -> dict:
        """``model.task_options`` over this task's defaults; an unknown key names the valid ones."""
        import difflib

        from pipelines.config import ConfigError

        for key in given:
            if key not in self.options:
                close = difflib.get_close_matches(key, list(self.options), n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                valid = ", ".join(self.options) or "none"
                raise ConfigError(f"unknown model.task_options key {key!r} for task {self.name!r}.{hint} "
                                  f"Valid: {valid}")
        return {**self.options, **given}

    def check_model(self, model_config):
        """The builder function the model section names; raises for a model this task cannot build."""
        raise NotImplementedError

    def bind(self, model, options: dict) -> dict:
        """``options`` with what the loss and the evaluation need from ``model`` (nothing, unless a task says)."""
        return options

    def history_fields(self) -> tuple:
        return ("epoch", "loss", self.train_metric, "val_loss", f"val_{self.monitor}", *self.validation_extras,
                "learning_rate", "images_per_second", "seconds")

    # --------------------------------------------------------------------- contract
    def build_model(self, model_config, num_classes: int, input_shape: tuple):
        raise NotImplementedError

    def data_spec(self, spec, model_config):
        """The run's DataSpec made this task's: ``target`` set to what the task trains on."""
        import dataclasses

        return dataclasses.replace(spec, target=self.target)

    def export_metadata(self, model, options: dict | None = None) -> dict:
        """What the exported graph needs beyond the class names and the preprocessing (kcnn.json);
        ``options``: the run's ``model.task_options`` with the export's overrides."""
        return {}

    def datasets(self, spec, split: str):
        """``(dataset, info)`` of batches ``(inputs, targets)`` for ``split``."""
        from pipelines.data import make_dataset

        return make_dataset(spec, split)

    def loss(self, targets, outputs, options: dict, config):
        raise NotImplementedError

    def train_score(self, targets, outputs, options: dict | None = None):
        raise NotImplementedError

    def evaluation_sums(self, targets, outputs, num_classes: int, options: dict | None = None) -> dict:
        raise NotImplementedError

    def evaluation_result(self, sums: dict, keep_predictions: bool, num_classes: int | None = None) -> dict:
        raise NotImplementedError

    def finish(self, run, model, history: list, test: dict, train_info, spec) -> dict:
        raise NotImplementedError

    def summary(self, metrics: dict) -> str:
        raise NotImplementedError

    def check_export(self, model, class_names: list) -> None:
        """Refuse class names that do not match the model's outputs (one per class in the last axis)."""
        classes = int(model.output_shape[-1])
        if len(class_names) != classes:
            raise ValueError(f"class_names has {len(class_names)} names but the model predicts {classes} classes")

    def serving_endpoints(self, model, preprocessing, metadata: dict, max_pixels: int) -> dict:
        raise NotImplementedError

    def verify_export(self, model, loaded, preprocessing, metadata: dict) -> float:
        raise NotImplementedError

    def write_predictions(self, outputs: dict, images: list, out_dir: str) -> list:
        """Write what ``kcnn predict --out-dir`` saves for each image; returns one line per image."""
        raise NotImplementedError

    def evaluate_run(self, run_dir: str, *, tta: str = "none", split: str | None = None, flip=None) -> dict:
        """``kcnn evaluate``: the figures of a finished run on ``split``, written to evaluation.json."""
        raise NotImplementedError

    def evaluate_split(self, run_dir: str, tta: str, split: str | None):
        """The shared part of ``evaluate_run`` for tasks scored by the distributed evaluator.

        Refuses test-time augmentation, loads the run and runs ``DistributedEvaluator`` with
        ``keep_predictions`` over ``split`` (the test split by default). Returns ``(run, class names,
        split, result)``.
        """
        import tensorflow as tf

        from pipelines.data import DataSpec
        from pipelines.distributed_eval import DistributedEvaluator
        from pipelines.evaluate import read_config
        from pipelines.run_dir import RunDir

        if tta != "none":
            raise ValueError(f"test-time augmentation ({tta!r}) is for classification runs; evaluate a {self.name} "
                             "run with tta='none' (--tta none)")
        run = RunDir(run_dir)
        config, model = read_config(run_dir), run.load_model()
        spec = self.data_spec(DataSpec.from_config(config.data, preprocessing=run.preprocessing()), config.model)
        split = split or spec.test_split
        dataset, info = self.datasets(spec.evaluation(cache=False), split)
        run.record_files(info)
        names = run.class_names()
        result = DistributedEvaluator(model, tf.distribute.get_strategy(), self, len(names),
                                      config.model.task_options)(dataset, keep_predictions=True)
        return run, names, split, result

    def format_evaluation(self, result: dict) -> str:
        raise NotImplementedError

    def report_sections(self, run, *, examples: int = 8) -> list:
        """``[(id, heading, html)]`` of the task's report sections; ``examples``: how many worst cases to show."""
        raise NotImplementedError


def get_task(name: str | None) -> Task:
    """The registered task ``name`` (None: classification); a wrong name lists the tasks and the closest."""
    import pipelines.tasks  # noqa: F401  (registers the tasks)

    return TASKS.get(name or DEFAULT_TASK)


def task_of(config) -> Task:
    """The task a config's ``model.task`` names."""
    return get_task(getattr(config.model, "task", None))


def task_for_outputs(outputs) -> Task:
    """The task whose served outputs a predict response holds (how ``kcnn predict`` reads any server's answer)."""
    import pipelines.tasks  # noqa: F401

    names = set(outputs)
    for name in TASKS.list():
        task = TASKS.get(name)
        if task.served_outputs and set(task.served_outputs) <= names:
            return task
    return None


class ExportError(RuntimeError):
    """The exported SavedModel does not reproduce the Keras model; nothing was put in place."""


SIGNATURE_NAMES = {"images": "serving_default", "image_bytes": "predict_image_bytes"}  # input name -> signature


def sample_images(spec, count: int = 3, seed: int = 0, size: int | None = None):
    """Small RGB uint8 test images for warm-up and verification (``spec``: the run's Preprocessing)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    size = size or max(spec.image_size, 8)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def png(image) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(image).numpy()


def call_signatures(loaded, images, image_dtype: str = "uint8") -> dict:
    """Both serving signatures of a reloaded SavedModel on the same images: {input name: outputs}."""
    import numpy as np
    import tensorflow as tf

    pixels = images if image_dtype == "uint8" else images.astype(np.float32)
    return {"images": loaded.signatures[SIGNATURE_NAMES["images"]](images=tf.constant(pixels)),
            "image_bytes": loaded.signatures[SIGNATURE_NAMES["image_bytes"]](
                image_bytes=tf.constant([png(i) for i in images]))}


def check_close(model, got: dict, expected) -> float:
    """The largest absolute difference of each signature's output from ``expected``; ExportError past tolerance."""
    import numpy as np

    tolerance = 1e-4 if model.dtype_policy.compute_dtype == "float32" else 2e-2
    difference = 0.0
    for name, value in got.items():
        value = np.asarray(value)
        if value.shape != np.shape(expected):
            raise ExportError(f"signature {SIGNATURE_NAMES[name]} of the exported model returned shape "
                              f"{value.shape}, the Keras model {np.shape(expected)}; the export was not put in place")
        difference = max(difference, float(np.max(np.abs(value - expected))) if value.size else 0.0)
        if difference > tolerance:
            raise ExportError(f"signature {SIGNATURE_NAMES[name]} of the exported model differs from the Keras model "
                              f"by {difference:g} (tolerance {tolerance:g}); the export was not put in place")
    return difference
