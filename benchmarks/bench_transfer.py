"""Transfer learning on the embedded digits: fine-tuning from a pretrained run vs training from scratch.

A network is pretrained on digits 0-4 (all their training images). Then, on digits
5-9 with only ``--labels`` training images per class, the same recipe and budget are
run twice per seed, interleaved: starting from the pretrained run's weights (backbone
frozen for the first epochs, then unfrozen at a lower rate, through ``model.weights``,
``model.freeze`` and ``train.unfreeze_at_epoch``) and from random initialisation. Test
accuracy on all test images of 5-9; medians over seeds and the difference in points.
The data go through ``folder:`` sources, as a user's own images would.

    python benchmarks/bench_transfer.py                      # LeNet-5, 20 labels per class, 2 seeds
    python benchmarks/bench_transfer.py --model resnet18     # the digits recipe's network (slower)

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipelines import config as C  # noqa: E402
from pipelines.sources import digits_arrays  # noqa: E402
from pipelines.train import train  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

RECIPE = {"data": {"image_size": 32, "channels": 1, "batch_size": 32},
          "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True,
                        "weight_decay": 0.0005, "schedule": "cosine"}}
MODELS = {  # LeNet-5 by default: the experiment fits a loaded 2-core CPU in minutes
    "lenet5": {"name": "lenet5"},
    "resnet18": {"name": "resnet18", "head": "fully_conv", "head_kwargs": {"dropout": 0.2}},
}


def write_folder(root: str, classes, per_class: int | None, seed: int) -> str:
    """Digits of ``classes`` as PNG files in ROOT/{train,validation,test}/CLASS/; ``per_class`` caps train."""
    rng = np.random.default_rng(seed)
    for split in ("train", "validation", "test"):
        images, labels = digits_arrays(split)
        for digit in classes:
            chosen = np.flatnonzero(labels == digit)
            if split == "train" and per_class is not None:
                chosen = rng.choice(chosen, per_class, replace=False)
            directory = os.path.join(root, split, str(digit))
            os.makedirs(directory, exist_ok=True)
            for index in chosen:
                tf.io.write_file(os.path.join(directory, f"{index}.png"), tf.io.encode_png(images[index]))
    return root


def run(name: str, model: str, sections: dict, run_dir: str) -> dict:
    raw = {k: dict(v) for k, v in RECIPE.items()}
    raw["model"] = dict(MODELS[model])
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    started = time.perf_counter()
    metrics = train(C.from_dict(raw), run_dir, verbose=False)
    print(f"{name}: test accuracy {metrics['test_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return metrics


def linear_probe(run_dir: str, folder: str) -> float:
    """Test accuracy of a logistic regression on the pretrained backbone's pooled features (5-9, few labels).

    How much the 0-4 features alone separate 5-9: the ceiling a frozen backbone gives fine-tuning.
    """
    import keras
    from sklearn.linear_model import LogisticRegression

    from pipelines.data import DataSpec, make_dataset
    from pipelines.finetune import is_head_layer
    from pipelines.run_dir import RunDir

    run = RunDir(run_dir)
    model = run.load_model()
    last = [layer for layer in model.layers if not is_head_layer(layer)][-1]
    features = keras.Model(model.inputs, last.output)
    spec = DataSpec.from_config(C.from_dict(RECIPE).data, preprocessing=run.preprocessing())
    spec = spec.evaluation(source=f"folder:{folder}", batch_size=64)

    def pooled(split):
        dataset, _ = make_dataset(spec, split)
        xs, ys = zip(*[(np.asarray(features(x, training=False)), y.numpy()) for x, y in dataset])
        x = np.concatenate(xs)
        return x.reshape(len(x), -1, x.shape[-1]).mean(axis=1), np.concatenate(ys)

    (x_train, y_train), (x_test, y_test) = pooled("train"), pooled("test")
    return max(LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train).score(x_test, y_test)
               for c in (0.1, 1.0, 10.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    parser.add_argument("--labels", type=int, default=20, help="training images per class of digits 5-9")
    parser.add_argument("--seeds", type=int, default=2, help="fine-tune/scratch pairs, each with its own sample")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=30, help="the budget of both fine-tuning and from-scratch runs")
    parser.add_argument("--unfreeze-at", type=int, default=10, help="epoch at which the backbone starts training")
    parser.add_argument("--unfreeze-lr", type=float, default=0.01, help="the rate once the backbone trains")
    parser.add_argument("--freeze", default="backbone", help="model.freeze of the fine-tuning runs")
    parser.add_argument("--pretrain-augment", default="none", help="data.augment of the pretraining run")
    parser.add_argument("--pretrained", help="reuse this pretraining run directory (same --model) instead of "
                                             "pretraining again")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="kcnn-transfer-")
    if args.pretrained:
        pretrained = args.pretrained
        pre = json.load(open(os.path.join(pretrained, "metrics.json")))
    else:
        pre_data = write_folder(os.path.join(work, "digits0-4"), range(5), None, 0)
        pretrained = os.path.join(work, "pretrain")
        pre = run("pretrain on 0-4", args.model, {"data": {"source": f"folder:{pre_data}",
                                                           "augment": args.pretrain_augment},
                                                  "train": {"epochs": args.pretrain_epochs}}, pretrained)
    results = {"finetune": [], "scratch": [], "probe": []}
    for seed in range(args.seeds):
        data = write_folder(os.path.join(work, f"digits5-9-seed{seed}"), range(5, 10), args.labels, seed)
        results["probe"].append(linear_probe(pretrained, data))
        print(f"seed {seed} linear probe of the pretrained features: test accuracy {results['probe'][-1]:.4f}",
              flush=True)
        common = {"data": {"source": f"folder:{data}", "batch_size": 20}}
        finetune = {**common, "model": {"weights": pretrained, "freeze": args.freeze},
                    "train": {"epochs": args.epochs, "seed": seed}}
        if args.freeze != "none":
            finetune["train"].update(unfreeze_at_epoch=args.unfreeze_at, unfreeze_learning_rate=args.unfreeze_lr)
        scratch = {**common, "train": {"epochs": args.epochs, "seed": seed}}
        order = [("finetune", finetune), ("scratch", scratch)]
        for name, sections in order if seed % 2 == 0 else order[::-1]:
            metrics = run(f"seed {seed} {name}", args.model, sections, os.path.join(work, f"{name}-{seed}"))
            results[name].append(metrics["test_accuracy"])
    finetune_acc, scratch_acc = statistics.median(results["finetune"]), statistics.median(results["scratch"])
    print(f"digits 5-9, {args.labels} labels per class, {args.epochs} epochs: fine-tuned {finetune_acc:.4f}, "
          f"from scratch {scratch_acc:.4f} (+{100 * (finetune_acc - scratch_acc):.1f} points)")
    print_result({"model": args.model, "pretrain_test_accuracy_0_4": pre["test_accuracy"], "labels_per_class": args.labels,
                 "epochs": args.epochs, "finetune_test_accuracy": finetune_acc,
                 "scratch_test_accuracy": scratch_acc, "finetune_runs": results["finetune"],
                 "scratch_runs": results["scratch"], "linear_probe_runs": results["probe"],
                 "difference_points": 100 * (finetune_acc - scratch_acc)})


if __name__ == "__main__":
    main()
