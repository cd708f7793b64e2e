"""Pruning while training (Deep Compression's first stage) from the config: ``train.prune_*`` keys.

``train.prune_table`` (a named table of ``kcnn.compress.TABLES``, e.g. ``squeezenet_table1``) or
``train.prune_density`` (one density for every Conv2D and Dense layer) turns it on. Without
``train.prune_end_epoch`` the model is pruned by magnitude once, before the first step, and
retrained with its masks; with it, the density falls gradually (Zhu and Gupta's cubic schedule)
from the first step to the end of that epoch. The masks are weights: checkpoints carry them, a
resumed run continues the schedule, and pruned weights stay exactly zero after every step.
"""

from __future__ import annotations


def pruning_densities(train_config):
    """The densities the config asks for (a table name or a ``{"*": density}`` dict), or ``None``."""
    if train_config.prune_table is not None:
        return train_config.prune_table
    if train_config.prune_density is not None:
        return {"*": train_config.prune_density}
    return None


def prune_for_training(model, train_config):
    """``model`` with masked layers when the config prunes (pruned now, or starting dense when gradual)."""
    from kcnn import compress

    densities = pruning_densities(train_config)
    if densities is None:
        return model
    return compress.prune(model, densities, one_shot=train_config.prune_end_epoch is None)


def pruning_callbacks(train_config, steps_per_epoch: int) -> list:
    """The callback that keeps pruned weights at zero after every step (and lowers the density, gradually)."""
    from kcnn import compress

    if pruning_densities(train_config) is None:
        return []
    schedule = None
    if train_config.prune_end_epoch is not None:
        end = train_config.prune_end_epoch * steps_per_epoch
        schedule = compress.PolynomialDensity(begin_step=0, end_step=end, frequency=max(1, steps_per_epoch // 4))
    return [compress.PruningCallback(schedule)]
