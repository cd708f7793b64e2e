"""``kcnn`` subcommands of the serving package. Importing this module stays cheap."""

from __future__ import annotations


def _export(args) -> int:
    import os

    if args.format == "litert":  # int8 .tflite for the edge: serving/litert.py
        from serving.litert import describe, export_run_litert

        print(describe(export_run_litert(args.run_dir, args.base_path)))
        return 0

    from pipelines.style import STYLIZER_FILE

    if os.path.exists(os.path.join(args.run_dir, STYLIZER_FILE)):  # an image-to-image run (kcnn train-style)
        from serving.stylizer import export_stylizer_run

        result = export_stylizer_run(args.run_dir, args.base_path, version=args.version, overwrite=args.overwrite,
                                     max_image_pixels=args.max_image_pixels)
    else:
        from serving.export import export_run

        result = export_run(args.run_dir, args.base_path, version=args.version, top_k=args.top_k,
                            overwrite=args.overwrite, image_dtype=args.image_dtype,
                            max_image_pixels=args.max_image_pixels,
                            task_options={"score_threshold": args.score_threshold,
                                          "max_detections": args.max_detections})
    print(f"exported version {result.version} to {result.path} "
          f"(SavedModel matches the Keras model to {result.max_abs_difference:.2g})")
    print(result.signatures)
    return 0


def _serving_config(args) -> int:
    from serving.config import MODELS_ROOT, Batching, ModelEntry, write_configs

    labels = {}
    for item in args.label or []:
        label, _, version = item.partition("=")
        if not label or not version.isdigit():
            raise ValueError(f"--label takes LABEL=VERSION, e.g. stable=1; got {item!r}")
        labels[label] = int(version)
    entry = ModelEntry(args.model_name, args.base_path or f"{MODELS_ROOT}/{args.model_name}",
                       args.version_policy, tuple(args.versions or ()), labels)
    batching = None
    if args.batching:
        batching = Batching(args.max_batch_size, args.batch_timeout_micros, args.num_batch_threads,
                            args.max_enqueued_batches, tuple(args.allowed_batch_sizes or ()))
    for name, path in write_configs(args.out, [entry], batching).items():
        print(f"wrote {path}")
    return 0


def tf_bool(text: str) -> bool:
    """A boolean flag value as TF Serving's flags take it: true/false (also 1/0)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    import argparse

    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _serve(args) -> int:
    import logging
    import sys

    from serving.config import ModelEntry, PROMETHEUS_PATH, models_from_config, read_batching_config
    from serving.config import read_monitoring_config
    from serving.models import Lifecycle, StartupError
    from serving.server import Server
    from serving.tensors import DEFAULT_MAX_ELEMENTS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.model_config_file:
        models = models_from_config(args.model_config_file)
    elif args.model_base_path:
        models = [ModelEntry(args.model_name, args.model_base_path)]
    else:
        raise ValueError("give --model_base_path (with --model_name), or --model_config_file")
    batching = None
    if args.enable_batching:
        from serving.config import Batching

        batching = read_batching_config(args.batching_parameters_file) if args.batching_parameters_file else Batching()
    prometheus_path = None
    if args.monitoring_config_file:
        monitoring = read_monitoring_config(args.monitoring_config_file)
        if monitoring.prometheus_config.enable:
            prometheus_path = monitoring.prometheus_config.path or PROMETHEUS_PATH
            if not args.rest_api_port:
                logging.warning("--monitoring_config_file enables Prometheus, which is served on the REST port; "
                                "give --rest_api_port")
    lifecycle = Lifecycle(args.enable_model_warmup, args.max_num_load_retries,
                          args.load_retry_interval_micros / 1e6)
    server = Server(models, port=args.port, rest_api_port=args.rest_api_port or None, host=args.host,
                    batching=batching, poll_seconds=args.file_system_poll_wait_seconds,
                    max_workers=args.grpc_max_threads, lifecycle=lifecycle, max_elements=args.max_request_elements or DEFAULT_MAX_ELEMENTS,
                    rest_threads=args.rest_api_num_threads, rest_timeout_ms=args.rest_api_timeout_in_ms,
                    prometheus_path=prometheus_path, model_config_file=args.model_config_file,
                    config_poll_seconds=args.model_config_file_poll_wait_seconds)
    try:
        server.start()
    except StartupError as error:  # TF Serving's words and a non-zero exit
        print(f"Failed to start server. Error: UNKNOWN: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"serving {', '.join(m.name for m in models)} on gRPC {args.host}:{server.port}"
          + (f", REST {args.host}:{server.rest_port}" if server.rest else "") + " (SIGTERM or Ctrl-C stops)",
          flush=True)
    server.wait()
    return 0


def _predict(args) -> int:
    import json
    import sys

    import grpc

    from serving.client import Client, ServingClientError

    if args.out_dir:
        return _predict_images(args)
    results = {path: ValueError(problem) for path, problem in _unreadable(args.images).items()}
    sendable = [path for path in args.images if path not in results]
    if not sendable:
        for path, problem in results.items():
            print(f"kcnn predict: {path}: {problem}", file=sys.stderr)
        return 1
    try:
        with Client(args.server, args.model, timeout=args.timeout, for_cli=True) as client:
            try:
                for image, prediction in zip(sendable, client.predict(sendable, version=args.version)):
                    results[image] = prediction
            except ServingClientError as error:
                if error.code != grpc.StatusCode.INVALID_ARGUMENT or len(sendable) == 1:
                    raise
                for image in sendable:  # one bad file among several: find it, answer the others
                    try:
                        results[image] = client.predict([image], version=args.version)[0]
                    except ServingClientError as one:
                        if one.code != grpc.StatusCode.INVALID_ARGUMENT:
                            raise
                        results[image] = one
    except ServingClientError as error:
        print(f"kcnn predict: {error}", file=sys.stderr)
        return 1
    good = [p for p in results.values() if not isinstance(p, Exception)]
    if good and args.top_k > len(good[0].labels) and len(good[0].probabilities) > len(good[0].labels):
        print(f"kcnn predict: error: --top-k {args.top_k} is more than the {len(good[0].labels)} labels the model "
              f"was exported to return; use --top-k {len(good[0].labels)} or less, or re-export with "
              f"kcnn export --top-k {args.top_k}", file=sys.stderr)
        return 2
    failed = 0
    results = {image: results[image] for image in args.images if image in results}  # the order given
    for image, prediction in results.items():
        if isinstance(prediction, Exception):
            failed += 1
            print(f"kcnn predict: {image}: {prediction}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"image": image, **{k: v[:args.top_k] for k, v in p.as_dict().items()}}
                          for image, p in results.items() if not isinstance(p, Exception)], indent=2))
    else:
        for image, prediction in results.items():
            if not isinstance(prediction, Exception):
                top = ", ".join(f"{label} {score:.3f}" for label, score in
                                list(zip(prediction.labels, prediction.scores))[:args.top_k])
                print(f"{image}: {top}")
    return 1 if failed else 0


def _demo(args) -> int:
    from serving.demo import run_demo

    result = run_demo(args.workdir)
    return 0 if result["served_accuracy"] >= 0.9 else 1


def _unreadable(paths) -> dict:
    """``{path: problem}`` for the files whose first bytes are no format the exported graphs decode (missing
    files are left to the client, which names them)."""
    import os

    from pipelines.image_header import FORMAT_NAMES, file_format

    problems = {}
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            if not file_format(handle.read(16)):
                problems[path] = (f"not a {FORMAT_NAMES} image (the formats the exported graph decodes); "
                                  "convert it or leave it out")
    return problems


def _predict_images(args) -> int:
    """Models that answer with pictures: a segmenter's masks and overlays, a super-resolution model's upscaled
    images (each task's ``write_predictions``), any other image-to-image model's (kcnn's stylizer) images as
    OUT_DIR/<input name>.png."""
    import os
    import sys

    from kcnn.files import atomic_write
    from pipelines.tasks import task_for_outputs
    from serving.client import Client, ServingClientError, image_outputs

    for path in args.images:  # checked here, named, before anything is sent
        if not os.path.isfile(path):
            print(f"kcnn predict: {path}: no such file", file=sys.stderr)
            return 1
    for path, problem in _unreadable(args.images).items():
        print(f"kcnn predict: {path}: {problem}", file=sys.stderr)
        return 1
    answers = []
    try:
        with Client(args.server, args.model, timeout=args.timeout, for_cli=True) as client:
            for path in args.images:  # one request each: images of several sizes never share a tensor
                answers.append(client.predict_raw(client.predict_request([path], version=args.version)))
    except ServingClientError as error:
        print(f"kcnn predict: {error}", file=sys.stderr)
        return 1
    task = task_for_outputs(answers[0])  # a segmenter's masks, a super-resolution model's images: the task writes them
    for path, outputs in zip(args.images, answers):
        if task is not None:
            lines = task.write_predictions(outputs, [path], args.out_dir)
        else:
            images = image_outputs(outputs)
            if not images:
                raise ValueError(f"model {args.model!r} returns {', '.join(sorted(outputs))}, no images (outputs "
                                 "named *_bytes); leave out --out-dir to print its predictions")
            name, encoded = sorted(images.items())[0]
            target = os.path.join(args.out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
            atomic_write(target, encoded[0])
            lines = [f"{path} -> {target} ({name})"]
        for line in lines:
            print(line)
    return 0


def register(sub) -> None:
    """Add this package's subcommands to the ``kcnn`` parser."""
    export = sub.add_parser(
        "export", help="export a trained run as a SavedModel version for TensorFlow Serving",
        description="Write BASE_PATH/<version>/ with the serving_default (images) and predict_image_bytes "
                    "(image_bytes) signatures, preprocessing in the graph, and warm-up records.")
    export.add_argument("run_dir", help="a finished run directory (from kcnn train or kcnn train-style)")
    export.add_argument("--base-path", required=True, help="model base path, e.g. models/digits")
    export.add_argument("--version", type=int, help="version number (default: the next integer)")
    export.add_argument("--top-k", type=int, default=5, help="labels the exported signatures return per image")
    export.add_argument("--image-dtype", choices=["uint8", "float32"], default="uint8",
                        help="dtype of the serving_default 'images' input")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version")
    export.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                        help="largest image (height x width) predict_image_bytes decodes; larger files are refused "
                             "with INVALID_ARGUMENT before decoding (default 16777216, 4096x4096)")
    export.add_argument("--score-threshold", type=float,
                        help="detection runs: the lowest score a served detection has (default: the run's "
                             "model.task_options.score_threshold, 0.05)")
    export.add_argument("--max-detections", type=int,
                        help="detection runs: detections per image, the second dimension of detection_boxes "
                             "(default: the run's model.task_options.max_detections, 100)")
    export.add_argument("--format", choices=["tf_saved_model", "litert"], default="tf_saved_model",
                        help="tf_saved_model (default) or litert: int8 BASE_PATH/model.tflite with float fallback")
    export.set_defaults(func=_export)

    config = sub.add_parser(
        "serving-config", help="write TF Serving's models.config, batching.config and monitoring.config",
        description="Write TensorFlow Serving configuration files in its text-protobuf format.")
    config.add_argument("--model-name", required=True, help="the name clients ask for")
    config.add_argument("--base-path", help="model base path inside the server (default /models/NAME)")
    config.add_argument("--version-policy", choices=["latest", "all", "specific"], default="latest",
                        help="which versions TF Serving loads (default: the latest)")
    config.add_argument("--versions", type=int, nargs="+", help="versions for 'specific' (or N for 'latest')")
    config.add_argument("--label", action="append", metavar="LABEL=VERSION", help="version label, repeatable")
    config.add_argument("--batching", action="store_true", help="also write batching.config")
    config.add_argument("--max-batch-size", type=int, default=32, help="largest batch the server forms")
    config.add_argument("--batch-timeout-micros", type=int, default=2000,
                        help="longest wait for a batch to fill, in microseconds")
    config.add_argument("--num-batch-threads", type=int, default=4, help="batches processed in parallel")
    config.add_argument("--max-enqueued-batches", type=int, default=100,
                        help="queued batches before requests are refused")
    config.add_argument("--allowed-batch-sizes", type=int, nargs="+",
                        help="sizes batches are padded to (the last must equal --max-batch-size)")
    config.add_argument("--out", default="serving/docker", help="output directory")
    config.set_defaults(func=_serving_config)

    serve = sub.add_parser(
        "serve", help="serve exported models over TF Serving's gRPC (and REST) API, for development",
        description="A local server speaking TensorFlow Serving's API. Flags are tensorflow_model_server's, with "
                    "its syntax (--port=8500, --enable_batching=true); booleans also work bare (--enable_batching).")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (0: a free one)")
    serve.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST, as in TF Serving)")
    serve.add_argument("--rest_api_num_threads", type=int, default=16, help="REST worker threads")
    serve.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                       help="REST socket read timeout in milliseconds")
    serve.add_argument("--model_name", default="default", help="model name with --model_base_path")
    serve.add_argument("--model_base_path", help="directory of numbered version directories")
    serve.add_argument("--model_config_file", help="ModelServerConfig in text format (models.config)")
    serve.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                       help="re-read --model_config_file this often (0: read once)")
    serve.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                       help="look for new versions this often (0: only at start)")
    serve.add_argument("--enable_batching", type=tf_bool, nargs="?", const=True, default=False,
                       help="batch concurrent requests (true/false)")
    serve.add_argument("--batching_parameters_file", help="BatchingParameters in text format (batching.config)")
    serve.add_argument("--enable_model_warmup", type=tf_bool, nargs="?", const=True, default=True,
                       help="replay assets.extra/tf_serving_warmup_requests before a version serves (default true)")
    serve.add_argument("--monitoring_config_file",
                       help="MonitoringConfig in text format; Prometheus metrics on the REST port at its path")
    serve.add_argument("--max_num_load_retries", type=int, default=5, help="retries of a failed version load")
    serve.add_argument("--load_retry_interval_micros", type=int, default=60_000_000,
                       help="wait between load retries, in microseconds")
    serve.add_argument("--grpc_max_threads", type=int, default=16, help="gRPC worker threads")
    serve.add_argument("--max_request_elements", type=int,
                       help="kcnn's limit on the elements one request tensor may declare, checked before allocating "
                            "(default 50331648: one 4096x4096 RGB image)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.set_defaults(func=_serve)

    predict = sub.add_parser(
        "predict", help="query a served model over gRPC with image files",
        description="Send image files to a served model's predict_image_bytes signature and print the top classes.")
    predict.add_argument("images", nargs="+", help="JPEG, PNG, GIF or BMP files")
    predict.add_argument("--server", default="localhost:8500", help="HOST:PORT of the gRPC endpoint")
    predict.add_argument("--model", required=True, help="model name")
    predict.add_argument("--version", type=int, help="a specific version (default: the latest served)")
    predict.add_argument("--top-k", type=int, default=5, help="labels to print per image (at most the exported top-k)")
    predict.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument("--out-dir", help="image-to-image models (kcnn train-style): save each returned image here "
                                           "as <input name>.png")
    predict.set_defaults(func=_predict)

    demo = sub.add_parser(
        "demo", help="kcnn's main job: train digits, export, serve, query over gRPC",
        description="Train pipelines/configs/digits.yaml into WORKDIR/runs/digits, export it as version 1 of "
                    "WORKDIR/models/digits, serve exactly that version on a free port and report its accuracy "
                    "on the held-out test images sent as PNG bytes (2-5 minutes on two CPU cores).")
    demo.add_argument("--workdir", default=".", help="where runs/ and models/ go (default: here)")
    demo.set_defaults(func=_demo)
