"""``kcnn compress`` with the run's own data: centroid fine-tuning on its training split, top-1 on its test split.

``kcnn.compress_cli`` compresses (keras and numpy only); this module reads a run's data as
``kcnn train`` and ``kcnn evaluate`` do (the run's config.yaml, its recorded preprocessing) and
registers the command with its handler. ``RunData(run_dir)`` is the same for Python callers
(``benchmarks/bench_compress.py``)::

    data = RunData("runs/digits-squeezenet")
    codes = compress.quantise(model, 6)
    data.finetune(model, codes)        # Deep Compression's centroid fine-tuning, codes fixed
    print(data.top1(model))            # the top-1 `kcnn evaluate` prints

Importing this module stays cheap: the data code and TensorFlow load inside the functions.
"""

from __future__ import annotations

import time

# About one and a half epochs of the digits recipe's training split (1,257 images in batches of 32): on the README's
# SqueezeNet run this takes the one-shot Table 1 model back from 91.1% to 96.7% (dense 97.2%) in about 20 s.
DEFAULT_STEPS = 60
DEFAULT_LEARNING_RATE = 3e-3


class RunData:
    """A finished classification run's training and test data, read with the run's own config and preprocessing."""

    def __init__(self, run_dir: str):
        from pipelines.data import DataSpec
        from pipelines.evaluate import read_config
        from pipelines.run_dir import RunDir
        from pipelines.tasks import task_of

        self.run_dir = run_dir
        self.config = read_config(run_dir)
        task = task_of(self.config).name
        if task != "classification":
            raise ValueError(f"{run_dir} is a {task} run; kcnn compress fine-tunes and scores classification runs "
                             "(image labels): pass --no-finetune to compress it without its data")
        self.spec = DataSpec.from_config(self.config.data, seed=self.config.train.seed,
                                         preprocessing=RunDir(run_dir).preprocessing())

    def top1(self, model) -> float:
        """Top-1 accuracy of ``model`` on the run's test split: the figure ``kcnn evaluate`` prints."""
        import numpy as np

        from pipelines.data import make_dataset

        spec = self.spec.evaluation(cache=False)
        dataset, _ = make_dataset(spec, spec.test_split)
        hits = total = 0
        for images, labels in dataset:
            hits += int(np.sum(np.argmax(model.predict_on_batch(images), axis=-1) == labels.numpy()))
            total += int(labels.shape[0])
        if not total:
            raise ValueError(f"the {spec.test_split} split of {self.run_dir} has no images to score")
        return hits / total

    def training_batches(self, steps: int):
        """``steps`` batches ``(images, labels)`` as numpy arrays: the run's training pipeline, without MixUp/CutMix."""
        import dataclasses

        from pipelines.data import make_dataset

        spec = dataclasses.replace(self.spec, mix=None)  # fine-tuning takes integer labels
        dataset, _ = make_dataset(spec, spec.train_split, repeat=True, shuffle=True, drop_remainder=True)
        for images, labels in dataset.take(steps):
            yield images.numpy(), labels.numpy()

    def finetune(self, model, codes: dict, steps: int = DEFAULT_STEPS,
                 learning_rate: float = DEFAULT_LEARNING_RATE) -> dict:
        """Train the shared centroids of ``model`` (``codes`` from ``kcnn.compress.quantise``) on the training split.

        Deep Compression's weight-sharing fine-tuning (``kcnn.compress.finetune_centroids``: a
        centroid's gradient is the sum of its weights' gradients, the codes stay fixed) with
        ``kcnn.compress.centroid_optimizer``. Returns what ``compression.json`` records of it.
        """
        import numpy as np

        from kcnn import compress

        if steps < 1:
            raise ValueError(f"--finetune-steps must be at least 1, got {steps} (pass --no-finetune to skip it)")
        started = time.perf_counter()
        losses = compress.finetune_centroids(model, codes, self.training_batches(steps),
                                             optimizer=compress.centroid_optimizer(steps, learning_rate))
        window = max(1, min(10, len(losses) // 2))
        return {"steps": len(losses), "batch_size": self.spec.batch_size, "learning_rate": learning_rate,
                "optimizer": "adam, cosine decay to 0", "seconds": time.perf_counter() - started,
                "loss_first": float(np.mean(losses[:window])), "loss_last": float(np.mean(losses[-window:]))}


def _run_data(run_dir: str, needed: bool) -> RunData | None:
    """The run's data; without it, a clear error when fine-tuning needs it, else ``None``."""
    try:
        return RunData(run_dir)
    except (FileNotFoundError, ValueError) as error:
        if needed:
            hint = "" if "--no-finetune" in str(error) else "; or pass --no-finetune to compress without the run's data"
            raise type(error)(f"{error}{hint}") from None
        return None


def _compress(args) -> int:
    from kcnn.compress_cli import check_run, compress_args, compress_run, print_result, widths_for

    options = compress_args(args)  # bad --bits / --density syntax, an unknown table: before any loading
    widths_for(options["densities"] if isinstance(options["densities"], str) else None)
    check_run(args.run_dir, args.out)
    if args.finetune and args.finetune_steps < 1:
        raise ValueError(f"--finetune-steps must be at least 1, got {args.finetune_steps} (or pass --no-finetune)")
    data = _run_data(args.run_dir, needed=args.finetune)
    finetune = (lambda model, codes: data.finetune(model, codes, args.finetune_steps)) if args.finetune else None
    report = compress_run(args.run_dir, args.out, **options, finetune=finetune,
                          top1=data.top1 if data is not None else None)
    print_result(report, args.out)
    if data is None:
        print(f"(no top-1: {args.run_dir} has no classification config and preprocessing to read its test split)")
    return 0


def register(sub) -> None:
    """Add ``kcnn compress`` (kcnn.compress_cli's arguments, fine-tuned and scored on the run's data)."""
    from kcnn.compress_cli import add_parser

    parser = add_parser(sub)
    parser.description += (" The shared centroids are then fine-tuned on the run's training split (the codes stay "
                           "fixed), and the dense, quantised and decoded models' top-1 on its test split are printed "
                           "and recorded.")
    parser.add_argument("--no-finetune", dest="finetune", action="store_false",
                        help="skip the centroid fine-tuning (the run's data are still read, to score top-1)")
    parser.add_argument("--finetune-steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help=f"centroid fine-tuning steps, one training batch each (default {DEFAULT_STEPS}: "
                             "about 1.5 epochs of the digits recipe)")
    parser.set_defaults(func=_compress)
