"""Atomic file writes, the one implementation every kcnn module, run and export uses.

``staged_path(path)`` yields a temporary path beside ``path`` (same directory, same extension, a
name that marks it as being written and by which process); when the block ends the file is fsynced,
made world-readable and renamed onto ``path``. A kill at any moment leaves the old file or the new
one, never half of one; :func:`remove_stale_staged_files` clears what dead writers left.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager

from kcnn.faults import crash_point

STAGED_TAG = "kcnn-staged-"  # in the names of files being written: .{stem}-kcnn-staged-{pid}-{random}{ext}


@contextmanager
def staged_path(path: str):
    """A temporary path beside ``path`` for any writer (``model.save``, ``savefig``...); renamed onto it at the end."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, extension = os.path.splitext(os.path.basename(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{stem}-{STAGED_TAG}{os.getpid()}-", suffix=extension,
                                         dir=directory)
    os.close(handle)
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; a server or a colleague reads these files too
        crash_point(f"replace:{os.path.basename(path)}")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_write(path: str, data: str | bytes) -> str:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns ``path``."""
    with staged_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def remove_stale_staged_files(directory: str) -> list[str]:
    """Delete files that writers killed before their rename left in ``directory`` (and one level down)."""
    removed = []
    for root, _, files in _walk_shallow(directory):
        for name in files:
            if not name.startswith(".") or STAGED_TAG not in name:
                continue
            pid = name.split(STAGED_TAG, 1)[1].split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                os.remove(os.path.join(root, name))
                removed.append(os.path.join(root, name))
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _walk_shallow(directory: str):
    if not os.path.isdir(directory):
        return
    top = next(os.walk(directory))
    yield top
    for sub in top[1]:
        yield next(os.walk(os.path.join(directory, sub)))


class DamagedFileError(ValueError):
    """A saved file that exists but does not read back whole (truncated, zeroed, half copied)."""


def keras_archive_problem(path: str) -> str | None:
    """Why ``path`` is not a complete ``.keras`` archive (a zip whose every member passes its CRC check and
    that holds ``config.json``), or None when it is whole. Reads the whole file; imports no Keras."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            names = archive.namelist()
    except zipfile.BadZipFile as error:
        return str(error)
    except (EOFError, zlib.error, OSError) as error:
        return f"{type(error).__name__}: {error}"
    if broken is not None:
        return f"{broken} fails its CRC check"
    if "config.json" not in names:
        return "it holds no config.json"
    return None


def damaged_keras_message(shown: str, problem: str, remedy: str = "") -> str:
    """The one line that says a ``.keras`` file is damaged, and what to do."""
    return f"{shown} is damaged (not a complete .keras zip archive: {problem})" + (f"; {remedy}" if remedy else "")


def load_keras_model(path: str, *, shown: str | None = None, remedy: str = "", **options):
    """``keras.saving.load_model(path, safe_mode=True)`` with kcnn's layers registered; a damaged file raises
    :class:`DamagedFileError` in one line (``shown`` names the file, ``remedy`` says what to do) instead of
    Keras's "File not found" or a ``BadZipFile`` traceback."""
    import keras

    import kcnn.layers  # noqa: F401  (registers kcnn's custom layers before loading)

    try:
        return keras.saving.load_model(path, safe_mode=True, **options)
    except Exception:
        problem = keras_archive_problem(path) if os.path.isfile(path) and path.endswith(".keras") else None
        if problem is None:
            raise  # a whole archive (or no file at all): Keras's own error stands
        raise DamagedFileError(damaged_keras_message(shown or path, problem, remedy)) from None
