"""The tiny training config that the run-directory tests share (conftest trains it once a session: ``tiny_run``)."""

from __future__ import annotations

import copy

# LeNet-5 on scikit-learn's digits, 32x32 grey, two epochs of four steps: a few seconds on two cores.
TINY = {"data": {"source": "digits", "image_size": 32, "channels": 1, "batch_size": 32},
        "model": {"name": "lenet5"},
        "optimizer": {"name": "sgd", "learning_rate": 0.05},
        "train": {"epochs": 2, "steps_per_epoch": 4}}


def tiny(*overrides):
    """TINY as a Config, with ``key=value`` overrides."""
    from pipelines import config as C

    return C.from_dict(copy.deepcopy(TINY), list(overrides))
