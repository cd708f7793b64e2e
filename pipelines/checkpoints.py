"""Resuming from a run's checkpoints when some of them are damaged, or their state file is lost.

A long run on rented machines meets truncated files (a disk that filled, a copy cut short), zeroed
ones (a crashed file system) and lost ones. :func:`restore_newest` reads the checkpoints from
their own files, newest first, and takes the first that reads back whole and matches the run:

- every tensor is read (CRC-checked) before any variable is assigned, so a damaged checkpoint never
  leaves the model half restored; each one skipped gets one warning line naming the file and why;
- a checkpoint written before the run's ``tf.train.Checkpoint`` gained a part (the ``step`` of a
  preempted epoch, the random-number states) restores the rest, if it holds the parts the caller
  requires (the model and the optimizer), and the new part keeps its initial value;
- a lost or damaged ``checkpoint`` state file (``tf.train.CheckpointManager``'s list of the
  checkpoints it keeps) is rewritten from the files, so the manager still deletes old checkpoints;
- when checkpoints exist and none reads back, it raises :class:`CheckpointsUnreadable` (one line
  naming the directory and the way out) instead of starting over on top of the finished epochs.

Nothing here assumes that ``ckpt-N`` is epoch N: the epoch is whatever the restored variables say.
:func:`set_aside_damaged_model` moves a damaged ``best.keras`` aside at the start of a session, so
the run ends on its last epoch's weights (with a warning) rather than failing at its very end.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import tensorflow as tf

from kcnn.files import damaged_keras_message, keras_archive_problem
from pipelines import fs

log = logging.getLogger(__name__)

STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's state file
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_INDEX = re.compile(r"(ckpt-(\d+))\.index")
_DATA = re.compile(r"(ckpt-(\d+))\.data-\d{5}-of-\d{5}")
_STATE_LINE = re.compile(r'(model_checkpoint_path|all_model_checkpoint_paths): "([^"\\]*)"'
                         r"|(all_model_checkpoint_timestamps|last_preserved_timestamp): ([-+0-9.eE]+|inf|nan)")


class CheckpointsUnreadable(ValueError):
    """A run directory holds checkpoints and none of them reads back: resuming is impossible and starting
    over would overwrite the finished epochs."""


@dataclass
class _State:
    """What the state file lists: checkpoint names (``ckpt-N``), oldest first, with their timestamps."""

    names: list
    timestamps: dict
    last_preserved: float | None


def restore_newest(checkpoint, directory: str, *, required=None, repair: bool = True) -> str | None:
    """Restore the newest checkpoint in ``directory`` that reads back whole; its prefix, or None for a new run.

    ``required``: the names of ``checkpoint``'s parts a checkpoint must hold to be this run's (default: all
    of them); the others may be missing, as in a checkpoint written before they were added, and then keep
    their values. ``repair``: rewrite the state file when it is lost, damaged or out of date (only the
    directory's one writer, the chief, should). Raises :class:`CheckpointsUnreadable` when checkpoints exist
    but none restores.
    """
    names = fs.listdir(directory)
    complete = {int(m.group(2)): m.group(1) for m in map(_INDEX.fullmatch, names) if m}
    data_only = {int(m.group(2)): m.group(1) for m in map(_DATA.fullmatch, names) if m
                 and int(m.group(2)) not in complete}
    state, state_problem = _read_state(fs.join(directory, STATE_FILE))
    skipped = []  # (name, reason) for the error line
    for number in sorted(data_only, reverse=True):
        if number > max(complete, default=-1):  # older ones are what a sweep interrupted between its deletions
            log.warning("skipped checkpoint %s: %s is missing (its write was interrupted)",
                        fs.join(directory, data_only[number]), f"{data_only[number]}.index")
    restored = None
    for number in sorted(complete, reverse=True):
        prefix = fs.join(directory, complete[number])
        problem = restore_whole(checkpoint, prefix, required)
        if problem is None:
            restored = prefix
            break
        log.warning("skipped checkpoint %s: %s", prefix, problem)
        skipped.append((complete[number], problem))
    if restored is None and (complete or (state and state.names)):
        _raise_unreadable(directory, skipped, state)
    if repair and complete:
        older = {number: name for number, name in data_only.items() if number < max(complete)}
        _repair_state(directory, state, state_problem, complete, older, restored)
    return restored


def restore_whole(checkpoint, prefix: str, required) -> str | None:
    """Restore ``prefix`` into ``checkpoint``; None when done, else why not (a damaged one before any assignment)."""
    name = os.path.basename(prefix)
    try:
        # tf.train.load_checkpoint's reader, without its test for a directory (which ram:// answers yes to any prefix)
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    except Exception as error:  # anything that fails reading the index: damaged, whatever the exception
        return f"{name}.index is damaged ({first_line(error)})"
    try:
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)  # CRC-checked: a truncated or zeroed data file fails here
        from tensorflow.core.protobuf.trackable_object_graph_pb2 import TrackableObjectGraph

        graph = TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH))
        saved = {child.local_name for child in graph.nodes[0].children}
    except Exception as error:
        return f"{_data_files(prefix)} is damaged ({first_line(error)})"
    children = dict(tf.train.TrackableView(checkpoint).children(checkpoint))
    children.pop("save_counter", None)  # tf.train.Checkpoint's own, which only save() writes (not write())
    missing = [key for key in children if key not in saved]
    needed = [key for key in missing if required is None or key in required]
    if needed:
        return f"it holds no {', '.join(needed)}: it is not a checkpoint of this run"
    if missing:  # written before these parts existed: they keep their values
        log.info("%s predates %s, which keep their initial values", prefix, ", ".join(missing))
    if missing or "save_counter" not in saved:  # restore what the file holds, and nothing else
        checkpoint = tf.train.Checkpoint(**{key: value for key, value in children.items() if key in saved})
    load = checkpoint.restore if "save_counter" in saved else checkpoint.read  # read(): what write() wrote
    try:
        load(prefix).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        return f"it does not match this run's model ({first_line(error)})"
    return None


def _data_files(prefix: str) -> str:
    files = fs.glob(f"{prefix}.data-?????-of-?????")
    return os.path.basename(files[0]) if len(files) == 1 else f"{os.path.basename(prefix)}.data-*"


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _raise_unreadable(directory: str, skipped: list, state: _State | None) -> None:
    run = os.path.dirname(directory.rstrip("/")) or "."
    if skipped:
        found = f"none of the checkpoints in {directory} reads back ({'; '.join(f'{n}: {why}' for n, why in skipped)})"
    else:
        found = f"{fs.join(directory, STATE_FILE)} lists {', '.join(state.names)} but their .index files are gone"
    raise CheckpointsUnreadable(
        f"{found}, so {run} cannot resume, and starting over would overwrite its finished epochs. Restore the "
        f"checkpoint files from a copy, or move {run} aside (or pass another --run-dir) to start a new run")


def _read_state(path: str) -> tuple[_State | None, str | None]:
    """The state file's list, and None; or None and why it cannot be read ("missing" when it is not there)."""
    if not fs.exists(path):
        return None, "missing"
    try:
        text = fs.read_text(path)
    except (OSError, UnicodeDecodeError, tf.errors.OpError) as error:
        return None, first_line(error)
    names, stamps, latest, last_preserved = [], [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _STATE_LINE.fullmatch(line.strip())
        if not match:
            return None, f"line {number} is not a checkpoint state: {line.strip()[:40]!r}"
        key, value = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), float(match.group(4)))
        if key == "model_checkpoint_path":
            latest = os.path.basename(value)
        elif key == "all_model_checkpoint_paths":
            names.append(os.path.basename(value))
        elif key == "all_model_checkpoint_timestamps":
            stamps.append(value)
        else:
            last_preserved = value
    if latest is None:
        return None, "it names no checkpoint"
    return _State(names, dict(zip(names, stamps)), last_preserved), None


def _repair_state(directory: str, state: _State | None, problem: str | None, complete: dict, data_only: dict,
                  restored: str | None) -> None:
    """Rewrite the state file to list every checkpoint on disk (and the data files a sweep left without their
    index, ``data_only``), oldest first, so that the manager deletes the oldest as it saves new ones
    (``max_to_keep``), and to name the restored one as the latest."""
    on_disk = {**data_only, **complete}
    names = [on_disk[number] for number in sorted(on_disk)]
    if state is not None and set(names) <= set(state.names):
        return  # it lists everything there is (and perhaps files a sweep already deleted): as the manager left it
    path = fs.join(directory, STATE_FILE)
    stamps = {name: (state.timestamps.get(name) if state else None) or _mtime(directory, name) for name in names}
    last_preserved = min(stamps.values()) - 1.0  # every listed checkpoint stays one the manager may delete
    latest = os.path.basename(restored) if restored else names[-1]
    lines = [f'model_checkpoint_path: "{latest}"', *(f'all_model_checkpoint_paths: "{name}"' for name in names),
             *(f"all_model_checkpoint_timestamps: {stamps[name]!r}" for name in names),
             f"last_preserved_timestamp: {last_preserved!r}"]
    fs.atomic_write(path, "\n".join(lines) + "\n")
    if problem == "missing":
        log.warning("%s was missing; rebuilt it from %s", path, ", ".join(names))
    elif problem is not None:
        log.warning("%s was damaged (%s); rebuilt it from %s", path, problem, ", ".join(names))
    else:
        log.info("%s did not list %s; rewrote it", path, ", ".join(sorted(set(names) - set(state.names))))


def _mtime(directory: str, name: str) -> float:
    files = fs.glob(fs.join(directory, f"{name}.*"))
    return max(tf.io.gfile.stat(file).mtime_nsec for file in files) / 1e9


def set_aside_damaged_model(path: str) -> bool:
    """Move a damaged ``best.keras`` to ``PATH.damaged`` with a warning line; True if it was damaged.

    Called as a session starts: training would otherwise fail at its very end, loading the best
    epoch's weights. Without the file, the run ends with its last epoch's weights, or those of a
    later epoch that beats the best validation figure so far (which is then saved as best.keras).
    """
    if not fs.exists(path):
        return False
    with fs.local_file(path) as local:
        problem = keras_archive_problem(local)
    if problem is None:
        return False
    aside = f"{path}.damaged"
    if fs.is_local(path):
        os.replace(path, aside)
    else:
        tf.io.gfile.rename(path, aside, overwrite=True)
    log.warning("%s; moved it to %s: the run ends with its last epoch's weights unless a later epoch beats the "
                "best validation figure so far", damaged_keras_message(path, problem), aside)
    return True
