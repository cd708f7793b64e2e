"""Prometheus metrics under TF Serving's names, served on the REST port at the path of
``--monitoring_config_file`` (``prometheus_config { enable: true path: "..." }``).

TF Serving exports its TensorFlow monitoring metrics with ``/`` turned into ``:``;
kcnn keeps the ones a dashboard for a model server reads:

- ``:tensorflow:serving:request_count{model_name,status}``: requests by outcome (gRPC's
  Predict, Classify and Regress, every outcome, as prediction_service_impl.cc counts them;
  REST requests naming a model);
- ``:tensorflow:serving:request_latency{model_name,API,entrypoint}``: a histogram in
  microseconds of *successful* requests only (TF Serving records it under ``if (status.ok())``):
  API ``Predict``/``Classify``/``Regress`` on ``GRPC``; on ``REST`` the verb of the URL
  (``predict``, ``classify``, ``regress``) and ``""`` for the GETs (status, metadata);
- ``:tensorflow:cc:saved_model:load_attempt_count{model_path,status}``: SavedModel loads
  by outcome (``success``/``fail``).

Model version states are not a metric in TF Serving; they are GetModelStatus' answer.
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))  # 10 us to about 1.5e9 us, TF Serving's growth


def _labels(names: tuple, values: tuple) -> str:
    def quoted(value) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{n}="{quoted(v)}"' for n, v in zip(names, values)) + "}"


class Metrics:
    """Counters and a latency histogram, rendered in Prometheus' text format."""

    REQUEST_COUNT = ":tensorflow:serving:request_count"
    REQUEST_LATENCY = ":tensorflow:serving:request_latency"
    LOAD_ATTEMPTS = ":tensorflow:cc:saved_model:load_attempt_count"

    def __init__(self):
        self._lock = threading.Lock()
        self._requests = defaultdict(int)
        self._loads = defaultdict(int)
        self._latency = defaultdict(lambda: [[0] * len(LATENCY_BUCKETS_US), 0, 0.0])  # buckets, count, sum

    def request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        micros = seconds * 1e6
        with self._lock:
            self._requests[(model_name, status)] += 1
            if status != "OK":
                return
            histogram = self._latency[(model_name, api, entrypoint)]
            for i, bound in enumerate(LATENCY_BUCKETS_US):
                if micros <= bound:
                    histogram[0][i] += 1
            histogram[1] += 1
            histogram[2] += micros

    def load_attempt(self, model_path: str, ok: bool) -> None:
        with self._lock:
            self._loads[(model_path, "success" if ok else "fail")] += 1

    def render(self) -> str:
        lines = []
        with self._lock:
            lines.append(f"# TYPE {self.REQUEST_COUNT} counter")
            lines += [f"{self.REQUEST_COUNT}{_labels(('model_name', 'status'), k)} {v}"
                      for k, v in sorted(self._requests.items())]
            lines.append(f"# TYPE {self.REQUEST_LATENCY} histogram")
            for key, (buckets, count, total) in sorted(self._latency.items()):
                names = ("model_name", "API", "entrypoint")
                for bound, n in zip(LATENCY_BUCKETS_US, buckets):
                    labels = _labels(names + ("le",), key + (f"{bound:.6g}",))
                    lines.append(f"{self.REQUEST_LATENCY}_bucket{labels} {n}")
                lines.append(f"{self.REQUEST_LATENCY}_bucket{_labels(names + ('le',), key + ('+Inf',))} {count}")
                lines.append(f"{self.REQUEST_LATENCY}_sum{_labels(names, key)} {total:.6g}")
                lines.append(f"{self.REQUEST_LATENCY}_count{_labels(names, key)} {count}")
            lines.append(f"# TYPE {self.LOAD_ATTEMPTS} counter")
            lines += [f"{self.LOAD_ATTEMPTS}{_labels(('model_path', 'status'), k)} {v}"
                      for k, v in sorted(self._loads.items())]
        return "\n".join(lines) + "\n"
