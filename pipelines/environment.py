"""Where training runs: precision policy, XLA, and the tf.distribute strategy, resolved from the config."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from pipelines.config import TrainConfig


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def resolve_precision(cfg: TrainConfig) -> str:
    """``auto``: mixed_float16 on GPUs with tensor cores (compute capability 7.0 or newer), else float32."""
    if cfg.precision != "auto":
        return cfg.precision
    for gpu in gpus():
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if tuple(capability) >= (7, 0):
            return "mixed_float16"
    return "float32"


def resolve_jit(cfg: TrainConfig) -> bool:
    """``auto``: XLA on GPUs, where it fuses well; off on CPUs, where compiling costs more than it saves."""
    if cfg.jit_compile == "auto":
        return bool(gpus())
    return cfg.jit_compile == "true"


def resolve_strategy(cfg: TrainConfig):
    """``auto``: multi_worker when TF_CONFIG names a cluster, mirrored with several GPUs, else the default."""
    name = cfg.strategy
    if name == "auto":
        if _cluster_size() > 1:
            name = "multi_worker"
        elif len(gpus()) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multi_worker":
        if _cluster_size() < 1:
            raise ValueError("train.strategy multi_worker needs the TF_CONFIG environment variable describing the "
                             "cluster and this task, e.g. {\"cluster\": {\"worker\": [\"host1:port\", "
                             "\"host2:port\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}")
        return name, tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return name, tf.distribute.MirroredStrategy()
    return name, tf.distribute.get_strategy()


def _cluster_size() -> int:
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except json.JSONDecodeError:
        raise ValueError("TF_CONFIG is not valid JSON; see the tf.distribute multi-worker guide for its format") \
            from None
    return sum(len(tasks) for tasks in cluster.values())


def is_chief(strategy) -> bool:
    """True on the one task that writes checkpoints, logs and exports (worker 0, or the only task)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())
