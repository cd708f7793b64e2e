"""Batch-norm statistics in short runs and across replicas: validation curves without and with precise BN.

Single process (default): the digits recipe (``pipelines/configs/digits.yaml``,
ResNet-18) trained for each ``--epochs`` value with ``train.precise_bn_batches=0``
(the moving averages as training leaves them: the behaviour before precise BN) and
with the default; prints validation accuracy per epoch, test accuracy and the
seconds each epoch took, side by side, runs alternating between the two settings.

``--workers 2``: the same recipe on two local workers (``TF_CONFIG`` on 127.0.0.1,
``train.strategy=multi_worker``), once per setting; prints each worker's validation
and test figures per epoch, whether they are identical, and the test accuracy of
the chief's ``model.keras`` evaluated alone.

    python benchmarks/bench_bn.py                         # epochs 1 and 3, single process
    python benchmarks/bench_bn.py --workers 2 --epochs 3  # two local workers

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipelines import config as C  # noqa: E402
from pipelines.train import train  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

SETTINGS = {"before": 0, "after": C.TrainConfig().precise_bn_batches}

WORKER = """
import json, sys
import keras
from pipelines import config as C
from pipelines.train import train

class Record(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        print("EPOCH", json.dumps({k: float(v) for k, v in logs.items()}), flush=True)

overrides = json.loads(sys.argv[3])
metrics = train(C.load(sys.argv[1], overrides), sys.argv[2], callbacks=[Record()], verbose=False)
print("METRICS", json.dumps({k: metrics[k] for k in ("test_accuracy", "test_top5_accuracy", "test_loss")}))
"""


def single_process(args, scratch) -> dict:
    results = {}
    for epochs in args.epochs:
        for name, batches in SETTINGS.items():
            overrides = [f"train.epochs={epochs}", f"train.precise_bn_batches={batches}", *args.set]
            history = []

            import keras

            class Record(keras.callbacks.Callback):
                def on_epoch_end(self, epoch, logs=None):
                    history.append(dict(logs))

            started = time.perf_counter()
            metrics = train(C.load(args.config, overrides), os.path.join(scratch, f"{name}-{epochs}"),
                            callbacks=[Record()], verbose=False)
            results[f"{name}_{epochs}_epochs"] = {
                "precise_bn_batches": batches,
                "val_accuracy": [round(h["val_accuracy"], 4) for h in history],
                "val_loss": [round(h["val_loss"], 4) for h in history],
                "train_accuracy": [round(h["accuracy"], 4) for h in history],
                "test_accuracy": round(metrics["test_accuracy"], 4),
                "seconds_per_epoch": [round(h["seconds"], 1) for h in history],
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
            row = results[f"{name}_{epochs}_epochs"]
            print(f"{epochs} epochs, precise_bn_batches={batches:3d} ({name}): val accuracy per epoch "
                  f"{row['val_accuracy']}, test accuracy {row['test_accuracy']:.4f}, {row['wall_seconds']:.0f} s",
                  flush=True)
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_workers(args, scratch) -> dict:
    from pipelines.evaluate import evaluate

    results = {}
    for epochs in args.epochs:
        for name, batches in SETTINGS.items():
            overrides = [f"train.epochs={epochs}", f"train.precise_bn_batches={batches}",
                         "train.strategy=multi_worker", *args.set]
            cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(args.workers)]}
            run_dir = os.path.join(scratch, f"workers-{name}-{epochs}")
            processes = []
            for index in range(args.workers):
                env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO,
                       "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
                processes.append(subprocess.Popen(
                    [sys.executable, "-c", WORKER, args.config, run_dir, json.dumps(overrides)],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO))
            workers = []
            for process in processes:
                output = process.communicate()[0]
                if process.returncode:
                    raise SystemExit(f"a worker failed:\n{output[-3000:]}")
                epochs_logged = [json.loads(line[6:]) for line in output.splitlines() if line.startswith("EPOCH ")]
                metrics = [json.loads(line[8:]) for line in output.splitlines() if line.startswith("METRICS ")][0]
                workers.append({"val_accuracy": [round(e["val_accuracy"], 4) for e in epochs_logged],
                                "val_loss": [round(e["val_loss"], 4) for e in epochs_logged],
                                "val_top5_accuracy": [round(e["val_top5_accuracy"], 4) for e in epochs_logged],
                                "loss": [round(e["loss"], 4) for e in epochs_logged], **metrics})
            keys = ("val_accuracy", "val_loss", "val_top5_accuracy", "test_accuracy", "test_top5_accuracy",
                    "test_loss")
            identical = all(w[k] == workers[0][k] for w in workers for k in keys)
            alone = evaluate(run_dir)["top1_accuracy"]
            results[f"{name}_{epochs}_epochs"] = {"workers": workers, "identical": identical,
                                                  "chief_model_alone_test_accuracy": round(alone, 4)}
            print(f"{args.workers} workers, {epochs} epochs, precise_bn_batches={batches} ({name}): identical "
                  f"{identical}; val accuracy {[w['val_accuracy'] for w in workers]}; test accuracy "
                  f"{[round(w['test_accuracy'], 4) for w in workers]}; chief's model.keras alone {alone:.4f}",
                  flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "pipelines", "configs", "digits.yaml"))
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--workers", type=int, default=1, help="2 or more: local workers under multi_worker")
    parser.add_argument("--set", nargs="*", default=[], help="more section.key=value overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bn-") as scratch:
        results = two_workers(args, scratch) if args.workers > 1 else single_process(args, scratch)
    print_result({"config": os.path.relpath(args.config, REPO), "workers": args.workers,
                 "runs": results})


if __name__ == "__main__":
    main()
