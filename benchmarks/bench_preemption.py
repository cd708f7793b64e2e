"""Preemption on the digits recipe: SIGTERM at a random step of epoch 2, the same command again, against no stop.

Two runs of ``kcnn train pipelines/configs/digits.yaml`` in fresh run directories: one uninterrupted, one
sent SIGTERM (as a preempted pod or spot VM gets it) at a random step of epoch 2 through kcnn's fault
points (``KCNN_CRASH_AT=train_step@N:TERM``), which must exit with code 42, and then started again with
the same command. The restarted session must continue from that step (its "resuming ... after step S"
line) and no step may run twice (the final checkpoint's optimizer iterations equal the uninterrupted
run's); the figures compared are the test accuracy and the weights. The remaining steps of the interrupted epoch are drawn
in the order the uninterrupted run reads them (pipelines.preemption.CountedPasses replays the shuffle), so
the two runs should end with the same weights up to floating-point non-determinism; the largest
difference between their final weights is reported.

    python benchmarks/bench_preemption.py            # about 5 minutes on 2 CPU cores
    python benchmarks/bench_preemption.py --seed 3   # another random step

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.result import print_result  # noqa: E402

CONFIG = os.path.join(REPO, "pipelines", "configs", "digits.yaml")


def kcnn_train(run_dir: str, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("KCNN_CRASH_AT", None)
    if crash:
        env["KCNN_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "kcnn.cli", "train", CONFIG, "--run-dir", run_dir],
                          capture_output=True, text=True, env=env, cwd=REPO)


def steps_per_epoch() -> int:
    from pipelines import config as configuration
    from pipelines.sources import load_source

    config = configuration.load(CONFIG, [])
    return load_source(config.data.source, "train").num_examples // config.data.batch_size


def iterations(run_dir: str) -> int:
    import tensorflow as tf

    return int(tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")))
               .get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


def weight_difference(first: str, second: str) -> float:
    """The largest absolute difference between the two runs' final weights (model.keras)."""
    import keras
    import numpy as np

    import kcnn.layers  # noqa: F401 (registers kcnn's layers)

    a, b = (keras.saving.load_model(os.path.join(path, "model.keras"), safe_mode=True) for path in (first, second))
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="picks the step of epoch 2 that gets SIGTERM")
    args = parser.parse_args()
    steps = steps_per_epoch()
    step = random.Random(args.seed).randrange(1, steps)  # steps 1..steps-1 of epoch 2 done when SIGTERM comes
    with tempfile.TemporaryDirectory() as scratch:
        plain, stopped = os.path.join(scratch, "plain"), os.path.join(scratch, "preempted")
        uninterrupted = kcnn_train(plain)
        assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
        first = kcnn_train(stopped, crash=f"train_step@{steps + step}:TERM")
        assert first.returncode == 42, (first.returncode, first.stderr[-3000:])
        print(first.stderr.strip().splitlines()[-1], flush=True)
        second = kcnn_train(stopped)
        assert second.returncode == 0, second.stderr[-3000:]
        resumed = re.search(r"resuming .* in epoch (\d+) of \d+ after step (\d+) of (\d+)", second.stdout)
        assert resumed, second.stdout[-2000:]
        print(resumed.group(0), flush=True)
        accuracy = {name: json.load(open(os.path.join(path, "metrics.json")))["test_accuracy"]
                    for name, path in (("uninterrupted", plain), ("preempted", stopped))}
        result = {
            "steps_per_epoch": steps, "sigterm_after_step": step, "resumed_epoch": int(resumed.group(1)),
            "resumed_after_step": int(resumed.group(2)), "exit_code": first.returncode,
            "iterations": {"uninterrupted": iterations(plain), "preempted": iterations(stopped)},
            "test_accuracy": accuracy,
            "max_abs_weight_difference": weight_difference(plain, stopped),
            "difference_points": round(100 * (accuracy["preempted"] - accuracy["uninterrupted"]), 2),
        }
    print(json.dumps(result, indent=1))
    print_result(result)


if __name__ == "__main__":
    main()
