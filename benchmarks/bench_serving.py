"""Latency and throughput of batch-1 Predict over gRPC against calling the same signature in process.

The model has the digits recipe's architecture (ResNet-18, fully convolutional head,
32x32 grey input; latency does not depend on the weights, so it is exported untrained
unless ``--base-path`` names a real export). Three ``kcnn serve`` processes serve it,
one with batching off and one with it on, and a third with batching off and TensorFlow's
thread pools at one thread each (``--tensorflow_intra_op_parallelism 1
--tensorflow_inter_op_parallelism 1``); this process runs the clients and the in-process
calls, with TensorFlow's default threads. For 1, 4
and 16 concurrent clients, each mode runs a short burst per round, modes interleaved
(rotating order each round); p50/p99 latency and requests per second are medians over
rounds.

    python benchmarks/bench_serving.py            # about 3 minutes on 2 CPU cores

The last line printed is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kcnn  # noqa: E402
from pipelines.preprocess import Preprocessing  # noqa: E402
from serving.client import Client  # noqa: E402
from serving.config import Batching, ModelEntry, write_configs  # noqa: E402
from serving.export import export  # noqa: E402
from result import print_result  # noqa: E402 - the RESULT line with the wall time

CLIENTS = (1, 4, 16)


ONE_THREAD = ["--tensorflow_intra_op_parallelism", "1", "--tensorflow_inter_op_parallelism", "1"]


def start_server(base_path: str, batching_file: str | None, extra=()) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "kcnn.cli", "serve", "--port", "0", "--model_name", "digits",
               "--model_base_path", base_path, "--file_system_poll_wait_seconds", "0", "--grpc_max_threads", "32",
               *extra]
    if batching_file:
        command += ["--enable_batching", "--batching_parameters_file", batching_file]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("kcnn serve exited before serving")
        match = re.search(r"on gRPC 127\.0\.0\.1:(\d+)", line)
        if match:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # drain its log
            return process, int(match.group(1))


def burst(call_factory, clients: int, seconds: float) -> tuple[list[float], float]:
    """Run ``clients`` threads calling as fast as they can for ``seconds``; latencies (s) and requests/s."""
    latencies, lock, stop = [], threading.Lock(), threading.Event()
    barrier = threading.Barrier(clients + 1)

    def worker():
        call = call_factory()
        mine = []
        barrier.wait()
        while not stop.is_set():
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return latencies, len(latencies) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-path", help="an exported model base path (default: export one to a temp dir)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="burst length per mode, round and client count")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout-micros", type=int, default=20000)
    parser.add_argument("--num-batch-threads", type=int, default=1)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="kcnn-bench-serving-")
    base_path = args.base_path
    if base_path is None:
        base_path = os.path.join(work, "digits")
        model = kcnn.build("resnet18", num_classes=10, head="fully_conv", input_shape=(32, 32, 1))
        export(model, base_path, class_names=[str(i) for i in range(10)],
               preprocessing=Preprocessing(image_size=32, channels=1), version=1)
    batching = Batching(max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
                        num_batch_threads=args.num_batch_threads, max_enqueued_batches=64)
    batching_file = write_configs(os.path.join(work, "cfg"), [ModelEntry("digits", base_path)], batching,
                                  monitoring=False)["batching.config"]
    plain, plain_port = start_server(base_path, None)
    batched, batched_port = start_server(base_path, batching_file)
    single, single_port = start_server(base_path, None, ONE_THREAD)

    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)  # one digits-sized image
    version = sorted(int(v) for v in os.listdir(base_path) if v.isdigit())[-1]
    signature = tf.saved_model.load(os.path.join(base_path, str(version))).signatures["serving_default"]
    tensor = tf.constant(image)

    def in_process():
        return lambda: signature(images=tensor)

    def over_grpc(port):
        def factory():
            client = Client(f"127.0.0.1:{port}", "digits", retries=0)
            client.wait_until_available(60)
            request = client.predict_request(image)
            return lambda: client.prediction.Predict(request, timeout=30)
        return factory

    modes = {"in_process": in_process, "grpc": over_grpc(plain_port), "grpc_batching": over_grpc(batched_port),
             "grpc_one_thread": over_grpc(single_port)}
    for factory in modes.values():  # warm up every path
        burst(factory, 1, 0.5)
    figures = {mode: {c: {"p50": [], "p99": [], "rps": []} for c in CLIENTS} for mode in modes}
    try:
        for r in range(args.rounds):
            order = list(modes)[r % len(modes):] + list(modes)[:r % len(modes)]
            for clients in CLIENTS:
                for mode in order:
                    latencies, rps = burst(modes[mode], clients, args.seconds)
                    figures[mode][clients]["p50"].append(float(np.percentile(latencies, 50)) * 1e3)
                    figures[mode][clients]["p99"].append(float(np.percentile(latencies, 99)) * 1e3)
                    figures[mode][clients]["rps"].append(rps)
    finally:
        for process in (plain, batched, single):
            process.terminate()
            process.wait(timeout=30)
    results = {mode: {str(c): {k: statistics.median(v) for k, v in per.items()} for c, per in by.items()}
               for mode, by in figures.items()}
    for clients in CLIENTS:
        row = " | ".join(f"{mode} p50 {results[mode][str(clients)]['p50']:.2f} ms p99 "
                         f"{results[mode][str(clients)]['p99']:.2f} ms {results[mode][str(clients)]['rps']:.0f}/s"
                         for mode in modes)
        print(f"{clients:2d} clients: {row}", flush=True)
    summary = {
        "benchmark": "bench_serving", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "tensorflow": tf.__version__, "rounds": args.rounds, "seconds_per_burst": args.seconds,
        "model": "resnet18 fully_conv, 32x32x1 input, batch-1 uint8 8x8x3 requests", "results": results,
        "batching": {"max_batch_size": args.max_batch_size, "batch_timeout_micros": args.batch_timeout_micros,
                     "num_batch_threads": args.num_batch_threads},
        "grpc_p50_overhead_ms_1_client": results["grpc"]["1"]["p50"] - results["in_process"]["1"]["p50"],
        "grpc_one_thread_p50_overhead_ms_1_client":
            results["grpc_one_thread"]["1"]["p50"] - results["in_process"]["1"]["p50"],
        "batching_throughput_ratio_16_clients": results["grpc_batching"]["16"]["rps"] / results["grpc"]["16"]["rps"],
    }
    print_result(summary, sort_keys=True)


if __name__ == "__main__":
    main()
