"""Server-side batching with TF Serving's ``BatchingParameters``.

Concurrent requests for the same servable and signature whose tensors agree in
every dimension but the first are concatenated into one call of up to
``max_batch_size`` rows, waiting at most ``batch_timeout_micros`` for a batch to
fill; the batch is padded up to the next of ``allowed_batch_sizes`` and the outputs
are split back per request. ``num_batch_threads`` threads run batches; more than
``max_enqueued_batches`` batches' worth of waiting rows is refused as UNAVAILABLE.
With ``enable_large_batch_splitting`` a request may carry up to ``max_batch_size``
rows and is cut into pieces of at most ``max_execution_batch_size``, each batched on
its own, as TF Serving's shared batch scheduler splits large tasks.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import grpc
import numpy as np

from serving.config import Batching
from serving.models import ServingError, batch_size, run_signature


@dataclass
class _Task:
    key: tuple
    function: object
    arrays: dict
    rows: int
    arrived: float
    future: Future = field(default_factory=Future)

    def compatible(self, other: "_Task") -> bool:
        return other.key == self.key and all(
            other.arrays[k].shape[1:] == a.shape[1:] and other.arrays[k].dtype == a.dtype
            for k, a in self.arrays.items())


class Batcher:
    def __init__(self, parameters: Batching):
        self.parameters = parameters
        self._queue: list[_Task] = []
        self._condition = threading.Condition()
        self._closed = False
        self.batches_run = 0  # calls of the model, and the requests they carried (for tests and benchmarks)
        self.requests_run = 0
        self._threads = [threading.Thread(target=self._work, name=f"kcnn-batch-{i}", daemon=True)
                         for i in range(parameters.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def run(self, key: tuple, function, arrays: dict) -> dict:
        """Run ``function`` on ``arrays`` as part of a batch; blocks until this request's outputs are ready."""
        rows = batch_size(arrays)
        limit, step = self.parameters.max_batch_size, self.parameters.execution_batch_size
        if rows > limit:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Task size {rows} is larger than maximum input batch size {limit}")
        pieces = [{k: a[start:start + step] for k, a in arrays.items()} for start in range(0, rows, step)]
        tasks = [_Task(key, function, piece, batch_size(piece), time.monotonic()) for piece in pieces]
        with self._condition:
            waiting = sum(t.rows for t in self._queue)
            if self._closed or waiting + rows > self.parameters.max_enqueued_batches * step:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            self._queue.extend(tasks)
            self._condition.notify_all()
        results = [task.future.result() for task in tasks]
        if len(results) == 1:
            return results[0]
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _take_batch(self) -> list[_Task] | None:
        timeout = self.parameters.batch_timeout_micros / 1e6
        limit = self.parameters.execution_batch_size
        with self._condition:
            while not self._queue and not self._closed:
                self._condition.wait()
            if not self._queue:
                return None
            first = self._queue[0]
            while True:
                batch, rows = [], 0
                for task in self._queue:
                    if first.compatible(task) and rows + task.rows <= limit:
                        batch.append(task)
                        rows += task.rows
                remaining = first.arrived + timeout - time.monotonic()
                if rows >= limit or remaining <= 0 or self._closed:
                    break
                self._condition.wait(remaining)
            for task in batch:
                self._queue.remove(task)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                outputs = self._run_batch(batch)
            except ServingError as error:
                if len(batch) == 1:
                    self._fail(batch, error)
                    continue
                # One bad request (say, undecodable image bytes) must not fail the others: run each alone.
                for task in batch:
                    self._run_alone(task)
                continue
            except BaseException as error:  # the thread lives on whatever happened
                self._fail(batch, error)
                continue
            start = 0
            for task in batch:
                task.future.set_result({k: v[start:start + task.rows] for k, v in outputs.items()})
                start += task.rows

    def _run_alone(self, task: _Task) -> None:
        try:
            task.future.set_result(self._run_batch([task]))
        except BaseException as error:
            task.future.set_exception(error)

    @staticmethod
    def _fail(batch: list[_Task], error: BaseException) -> None:
        for task in batch:
            task.future.set_exception(error)

    def _run_batch(self, batch: list[_Task]) -> dict:
        self.batches_run += 1
        self.requests_run += len(batch)
        rows = sum(task.rows for task in batch)
        padded = next((size for size in self.parameters.allowed_batch_sizes if size >= rows), rows)
        arrays = {}
        for key in batch[0].arrays:
            joined = np.concatenate([task.arrays[key] for task in batch])
            if padded > rows:  # pad with copies of the first row up to an allowed batch size
                joined = np.concatenate([joined, np.repeat(joined[:1], padded - rows, axis=0)])
            arrays[key] = joined
        return run_signature(batch[0].function, arrays)
