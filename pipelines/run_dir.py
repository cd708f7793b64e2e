"""The layout of a run directory, in one place: what training writes and what evaluation, export and the demo read.

::

    RUN/config.yaml            the resolved config (written when the first epoch starts: the run is claimed)
    RUN/checkpoints/           tf.train checkpoints of the last epochs (resume)
    RUN/logs/{train,validation}/  TensorBoard scalars
    RUN/history.csv            one row per epoch
    RUN/best.keras             the model of the best validation accuracy so far
    RUN/model.keras            the final model              \\
    RUN/class_names.json       its class names               > a finished run: what `kcnn export` needs
    RUN/preprocessing.json     the Preprocessing serving applies /
    RUN/metrics.json           test and training figures
    RUN/run_info.json          when each training session started, when the run finished, and the versions it ran on
    RUN/evaluation[_TTA].json  `kcnn evaluate` results
    RUN/plots/*.png            curves, learning rate and confusion matrices
    RUN/report.html            the run's report page (pipelines/run_report.py)

Every file is written atomically (a temporary name in the same directory, fsync,
``os.replace``), so a crash never leaves half a file behind. RUN may be on any TensorFlow
filesystem (``gs://bucket/runs/x``): :mod:`pipelines.fs` then writes through ``tf.io.gfile``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from datetime import datetime, timezone

from pipelines import fs
from pipelines.fs import atomic_write, remove_stale_staged_files, staged_path  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# The software each training session records in run_info.json: key -> the name the report shows.
VERSION_NAMES = (("kcnn", "kcnn"), ("keras", "Keras"), ("tensorflow", "TensorFlow"), ("python", "Python"))


def software_versions() -> dict:
    """The versions of VERSION_NAMES this process runs."""
    import keras
    import tensorflow as tf

    import kcnn

    return {"kcnn": kcnn.__version__, "keras": keras.__version__, "tensorflow": tf.__version__,
            "python": platform.python_version()}


def utc_now() -> str:
    """Now, in UTC, as ISO 8601 to the second (``2026-03-01T12:00:00+00:00``): run_info.json's dates."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """A run directory: its file names, and reading and writing its small files."""

    CONFIG = "config.yaml"
    CHECKPOINTS = "checkpoints"
    LOGS = "logs"
    HISTORY = "history.csv"
    BEST_MODEL = "best.keras"
    MODEL = "model.keras"
    CLASS_NAMES = "class_names.json"
    PREPROCESSING = "preprocessing.json"
    METRICS = "metrics.json"
    RUN_INFO = "run_info.json"
    DATA_FILES = "data_files.json"  # the files of each split and the skipped ones, for file-based sources
    PLOTS = "plots"
    FINISHED = (MODEL, CLASS_NAMES, PREPROCESSING)  # what export and the demo need

    def __init__(self, path: str):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def __str__(self) -> str:
        return self.path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def config(self) -> str:
        return self.file(self.CONFIG)

    @property
    def checkpoints(self) -> str:
        return self.file(self.CHECKPOINTS)

    @property
    def history(self) -> str:
        return self.file(self.HISTORY)

    @property
    def best_model(self) -> str:
        return self.file(self.BEST_MODEL)

    @property
    def model(self) -> str:
        return self.file(self.MODEL)

    @property
    def metrics(self) -> str:
        return self.file(self.METRICS)

    def logs(self, name: str) -> str:
        return os.path.join(self.path, self.LOGS, name)

    def plot(self, name: str) -> str:
        return os.path.join(self.path, self.PLOTS, f"{name}.png")

    def evaluation(self, tta: str = "none") -> str:
        return self.file("evaluation.json" if tta == "none" else f"evaluation_{tta}.json")

    # ------------------------------------------------------------------ claiming

    def check_can_resume(self, config_text: str) -> bool:
        """True when this directory holds a run of the same config (resume), False when it holds none.

        Raises ``ValueError`` when it holds a run of another config. Writes nothing.
        """
        if not fs.exists(self.config):
            return False
        if fs.read_text(self.config) != config_text:
            raise ValueError(f"{self.path} holds a run with a different config; pass another run directory "
                             f"(--run-dir) or delete {self.path} to start over")
        return True

    def claim(self, config_text: str) -> None:
        """Make this the directory of a run of ``config_text``: call once the run has actually started.

        A resumed run first removes what a killed predecessor left half-written: staged files that
        were never renamed into place and TensorFlow's ``*_temp`` checkpoint directories.
        """
        if not self.check_can_resume(config_text):
            atomic_write(self.config, config_text)
            return
        for path in remove_stale_staged_files(self.path):
            log.info("removed %s, left by an interrupted run", path)
        for name in fs.listdir(self.checkpoints):
            if name.endswith("_temp") and fs.isdir(fs.join(self.checkpoints, name)):
                fs.rmtree(fs.join(self.checkpoints, name))
                log.info("removed checkpoints/%s, left by an interrupted checkpoint write", name)

    def record_files(self, *infos) -> None:
        """Record which files each split used (and which were skipped), or check them against the record.

        A folder split by :func:`pipelines.sources.split_indices` is deterministic, so a resumed run or
        ``kcnn evaluate`` sees the same files; if the folder changed since, this refuses to mix them.
        """
        infos = [info for info in infos if info.files or info.skipped]
        if not infos:
            return
        path = self.file(self.DATA_FILES)
        recorded = self.read_json(self.DATA_FILES) if fs.exists(path) else {}
        for info in infos:
            entry = {"files": list(info.files), "skipped": list(info.skipped)}
            if info.split in recorded and recorded[info.split]["files"] != entry["files"]:
                raise ValueError(f"the {info.split} files of {info.source} differ from those this run used "
                                 f"({path}): the folder changed since the run started. Restore it, or start a new "
                                 "run directory (--run-dir)")
            recorded[info.split] = entry
        atomic_write(path, json.dumps(recorded, indent=1))

    def record_session(self, started_utc: str, start_epoch: int, versions: dict) -> None:
        """Add a training session to ``run_info.json``: its start (UTC), the epoch it starts after, its versions."""
        info = self.run_info()
        sessions = info.get("sessions", []) + [{"started_utc": started_utc, "start_epoch": start_epoch,
                                                "versions": dict(versions)}]
        info.update(sessions=sessions, finished_utc=None)  # finished again when this session finishes
        self.write_json(self.RUN_INFO, info)

    def record_finish(self, finished_utc: str) -> None:
        """Record in ``run_info.json`` when the run finished (its test figures and model written)."""
        self.write_json(self.RUN_INFO, {**self.run_info(), "finished_utc": finished_utc})

    # ------------------------------------------------------------------ reading

    def missing(self) -> list[str]:
        """The files of a finished run this directory lacks."""
        return [name for name in self.FINISHED if not fs.exists(self.file(name))]

    def require_finished(self) -> "RunDir":
        missing = self.missing()
        if missing:
            raise FileNotFoundError(f"{self.path} is not a finished kcnn run (missing {', '.join(missing)}); "
                                    "train one with `kcnn train CONFIG.yaml` first")
        return self

    def read_text(self, name: str) -> str:
        return fs.read_text(self.file(name))

    def read_json(self, name: str):
        return json.loads(self.read_text(name))

    def read_config_text(self) -> str | None:
        return self.read_text(self.CONFIG) if fs.exists(self.config) else None

    def run_info(self) -> dict:
        """``run_info.json`` (``sessions``: started_utc, start_epoch, versions; ``finished_utc``), or {} when the
        run predates it."""
        return self.read_json(self.RUN_INFO) if fs.exists(self.file(self.RUN_INFO)) else {}

    def class_names(self) -> list[str]:
        return [str(name) for name in self.read_json(self.CLASS_NAMES)]

    def preprocessing(self):
        from pipelines.preprocess import Preprocessing

        return Preprocessing.from_json(self.read_text(self.PREPROCESSING))

    def load_model(self):
        """model.keras; a damaged one raises ``kcnn.files.DamagedFileError``, one line saying how to write it again."""
        from kcnn.files import load_keras_model

        config = self.config if fs.exists(self.config) else "CONFIG.yaml"
        remedy = (f"write it again with `kcnn train {config} --run-dir {self.path}` (the run's checkpoints are in "
                  f"{self.checkpoints})")
        with fs.local_file(self.model) as local:
            return load_keras_model(local, shown=self.model, remedy=remedy)

    # ------------------------------------------------------------------ writing

    def write_json(self, name: str, value) -> str:
        return atomic_write(self.file(name), json.dumps(value, indent=2))

    def write_text(self, name: str, text: str) -> str:
        return atomic_write(self.file(name), text)

    def save_model(self, model, name: str = MODEL) -> str:
        path = self.file(name)
        with staged_path(path) as temporary:
            model.save(temporary)
        return path
