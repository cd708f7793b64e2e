"""Run directories and data on any TensorFlow filesystem: local paths, ``gs://``, ``ram://``, ``hdfs://``.

Local paths keep :mod:`kcnn.files`' protocol (a staged name beside the target, fsync, ``os.replace``).
A path with a scheme goes through ``tf.io.gfile``: a file is written under a staged name in the same
directory and then renamed onto its target. On Cloud Storage a rename is a server-side copy and a
delete, and an object becomes visible only once whole, so readers see the old file or the new one,
never part of one; the staged name (``.NAME-kcnn-staged-...``) is what a kill can leave behind, and
:func:`remove_stale_staged_files` clears it when the run resumes. Checkpoints and TensorBoard logs are
TensorFlow's own (``tf.train.CheckpointManager`` writes a checkpoint's files before its index and its
state file), and they take any such path as they are.
"""

from __future__ import annotations

import glob as _glob
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager

from kcnn import files as local_files
from kcnn.faults import crash_point
from kcnn.files import STAGED_TAG


def _gfile():
    import tensorflow as tf  # here, not at import: reading a local run directory should not load TensorFlow

    return tf.io.gfile


def is_local(path: str) -> bool:
    """Whether ``path`` is on this machine's filesystem (no ``scheme://``)."""
    return "://" not in os.fspath(path)


def out_of_space(error: BaseException) -> str | None:
    """Why writing failed, when it was for want of space (Python's OSError or TensorFlow's error of the same
    errno: ENOSPC, EDQUOT, EFBIG); None otherwise."""
    import errno
    import sys

    reasons = [os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)]
    if isinstance(error, OSError):
        return os.strerror(error.errno) if error.errno is not None and os.strerror(error.errno) in reasons else None
    tf = sys.modules.get("tensorflow")  # a TensorFlow error can only come from a process that loaded it
    if tf is not None and isinstance(error, tf.errors.OpError):
        return next((reason for reason in reasons if reason in str(error)), None)
    return None


def out_of_space_path(error: BaseException, reason: str) -> str | None:
    """The file a write that ran out of space was writing, where the error names it."""
    if isinstance(error, OSError) and error.filename:
        return os.fspath(error.filename)
    import re

    found = re.search(r"(\S+); " + re.escape(reason), str(error))  # TensorFlow: "... PATH; No space left on device"
    return found.group(1) if found else None


def join(path: str, *names: str) -> str:
    return os.path.join(os.fspath(path), *names)


def exists(path: str) -> bool:
    return os.path.exists(path) if is_local(path) else _gfile().exists(path)


def isdir(path: str) -> bool:
    return os.path.isdir(path) if is_local(path) else _gfile().isdir(path)


def listdir(path: str) -> list[str]:
    """The names in a directory (no trailing slashes), [] when it does not exist."""
    if not isdir(path):
        return []
    return sorted(name.rstrip("/") for name in (os.listdir(path) if is_local(path) else _gfile().listdir(path)))


def walk(top: str):
    """``os.walk`` (top-down: directory, subdirectories, files), through ``tf.io.gfile.walk`` elsewhere."""
    if is_local(top):
        yield from os.walk(top)
        return
    for directory, subdirectories, files in _gfile().walk(top):
        yield directory, [d.rstrip("/") for d in subdirectories], files


def makedirs(path: str) -> None:
    if path:
        os.makedirs(path, exist_ok=True) if is_local(path) else _gfile().makedirs(path)


def remove(path: str) -> None:
    os.remove(path) if is_local(path) else _gfile().remove(path)


def rmtree(path: str) -> None:
    if isdir(path):
        shutil.rmtree(path, ignore_errors=True) if is_local(path) else _gfile().rmtree(path)


def read_bytes(path: str) -> bytes:
    if is_local(path):
        with open(path, "rb") as handle:
            return handle.read()
    with _gfile().GFile(path, "rb") as handle:
        return handle.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def glob(pattern: str) -> list[str]:
    """The paths matching ``pattern``, sorted (elsewhere than locally ``tf.io.gfile.glob``: ``gs://`` buckets)."""
    return sorted(_glob.glob(pattern) if is_local(pattern) else _gfile().glob(pattern))


@contextmanager
def local_file(path: str):
    """``path`` itself when local, else a local copy of it for readers that need one (Keras, zipfile)."""
    if is_local(path):
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="kcnn-read-")
    try:
        local = os.path.join(scratch, os.path.basename(path))
        _gfile().copy(path, local, overwrite=True)
        yield local
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def staged_path(path: str):
    """A path to write ``path``'s new content to; it replaces ``path`` whole when the block ends.

    Local: :func:`kcnn.files.staged_path`. Elsewhere: a local temporary file (so any writer, ``savefig``
    or ``model.save``, can use it), copied to a staged name beside ``path`` and renamed onto it.
    """
    if is_local(path):
        with local_files.staged_path(path) as temporary:
            yield temporary
        return
    directory, name = os.path.split(path)
    stem, extension = os.path.splitext(name)
    scratch = tempfile.mkdtemp(prefix="kcnn-stage-")
    try:
        local = os.path.join(scratch, name)
        yield local
        makedirs(directory)
        staged = join(directory, f".{stem}-{STAGED_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}{extension}")
        _gfile().copy(local, staged, overwrite=True)
        try:
            crash_point(f"replace:{name}")
            _gfile().rename(staged, path, overwrite=True)
        except BaseException:
            if _gfile().exists(staged):
                _gfile().remove(staged)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def atomic_write(path: str, data: str | bytes) -> str:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` whole or not at all; returns ``path``."""
    if is_local(path):
        return local_files.atomic_write(path, data)
    with staged_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def remove_stale_staged_files(directory: str) -> list[str]:
    """Delete what killed writers left under staged names in ``directory`` and one level down.

    Locally only files of dead processes go (:func:`kcnn.files.remove_stale_staged_files`). On a shared
    filesystem the writer may have run on another machine, so every staged file goes: call it only
    where this process is the directory's one writer (a resumed run's chief).
    """
    if is_local(directory):
        return local_files.remove_stale_staged_files(directory)
    removed = []
    for folder in [directory] + [join(directory, name) for name in listdir(directory)]:
        for name in listdir(folder):
            if name.startswith(".") and STAGED_TAG in name:
                remove(join(folder, name))
                removed.append(join(folder, name))
    return removed
