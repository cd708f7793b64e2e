"""``kcnn`` subcommands of the serving package. Importing this module stays cheap."""

from __future__ import annotations


def _export(args) -> int:
    if args.format == "litert":  # int8 .tflite for the edge: serving/litert.py
        from serving.litert import describe, export_run_litert

        print(describe(export_run_litert(args.run_dir, args.base_path)))
        return 0
    from serving.export import export_run

    result = export_run(args.run_dir, args.base_path, version=args.version, top_k=args.top_k,
                        overwrite=args.overwrite, image_dtype=args.image_dtype)
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


def _serve(args) -> int:
    import logging

    from serving.config import ModelEntry, read_batching_config, read_models_config
    from serving.server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.model_config_file:
        parsed = read_models_config(args.model_config_file)
        models = []
        for config in parsed.model_config_list.config:
            policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
            numbers = (tuple(config.model_version_policy.specific.versions) if policy == "specific" else
                       (config.model_version_policy.latest.num_versions or 1,) if policy == "latest" else ())
            models.append(ModelEntry(config.name, config.base_path, policy, numbers, dict(config.version_labels)))
    elif args.model_name and args.model_base_path:
        models = [ModelEntry(args.model_name, args.model_base_path)]
    else:
        raise ValueError("give --model_name and --model_base_path, or --model_config_file")
    batching = None
    if args.enable_batching:
        from serving.config import Batching

        batching = read_batching_config(args.batching_parameters_file) if args.batching_parameters_file else Batching()
    server = Server(models, port=args.port, rest_api_port=args.rest_api_port or None, host=args.host,
                    batching=batching, poll_seconds=args.file_system_poll_wait_seconds,
                    max_workers=args.grpc_max_threads)
    server.start()
    print(f"serving {', '.join(m.name for m in models)} on gRPC {args.host}:{server.port}"
          + (f", REST {args.host}:{server.rest_port}" if server.rest else "") + " (SIGTERM or Ctrl-C stops)",
          flush=True)
    server.wait()
    return 0


def _predict(args) -> int:
    import json

    import sys

    from serving.client import Client, ServingClientError

    try:
        with Client(args.server, args.model, timeout=args.timeout) as client:
            predictions = client.predict(args.images, version=args.version)
    except ServingClientError as error:
        print(f"kcnn predict: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"image": image, **{k: v[:args.top_k] for k, v in p.as_dict().items()}}
                          for image, p in zip(args.images, predictions)], indent=2))
    else:
        for image, prediction in zip(args.images, predictions):
            top = ", ".join(f"{label} {score:.3f}" for label, score in
                            list(zip(prediction.labels, prediction.scores))[:args.top_k])
            print(f"{image}: {top}")
    return 0


def _demo(args) -> int:
    from serving.demo import run_demo

    result = run_demo(args.workdir)
    return 0 if result["served_accuracy"] >= 0.9 else 1


def register(sub) -> None:
    """Add this package's subcommands to the ``kcnn`` parser."""
    export = sub.add_parser(
        "export", help="export a trained run as a SavedModel version for TensorFlow Serving",
        description="Write BASE_PATH/<version>/ with the serving_default (images) and predict_image_bytes "
                    "(image_bytes) signatures, preprocessing in the graph, and warm-up records.")
    export.add_argument("run_dir", help="a finished run directory (from kcnn train)")
    export.add_argument("--base-path", required=True, help="model base path, e.g. models/digits")
    export.add_argument("--version", type=int, help="version number (default: the next integer)")
    export.add_argument("--top-k", type=int, default=5)
    export.add_argument("--image-dtype", choices=["uint8", "float32"], default="uint8",
                        help="dtype of the serving_default 'images' input")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version")
    export.add_argument("--format", choices=["tf_saved_model", "litert"], default="tf_saved_model",
                        help="tf_saved_model (default) or litert: int8 BASE_PATH/model.tflite with float fallback")
    export.set_defaults(func=_export)

    config = sub.add_parser(
        "serving-config", help="write TF Serving's models.config, batching.config and monitoring.config",
        description="Write TensorFlow Serving configuration files in its text-protobuf format.")
    config.add_argument("--model-name", required=True)
    config.add_argument("--base-path", help="model base path inside the server (default /models/NAME)")
    config.add_argument("--version-policy", choices=["latest", "all", "specific"], default="latest")
    config.add_argument("--versions", type=int, nargs="+", help="versions for 'specific' (or N for 'latest')")
    config.add_argument("--label", action="append", metavar="LABEL=VERSION", help="version label, repeatable")
    config.add_argument("--batching", action="store_true", help="also write batching.config")
    config.add_argument("--max-batch-size", type=int, default=32)
    config.add_argument("--batch-timeout-micros", type=int, default=2000)
    config.add_argument("--num-batch-threads", type=int, default=4)
    config.add_argument("--max-enqueued-batches", type=int, default=100)
    config.add_argument("--allowed-batch-sizes", type=int, nargs="+")
    config.add_argument("--out", default="serving/docker", help="output directory")
    config.set_defaults(func=_serving_config)

    serve = sub.add_parser(
        "serve", help="serve exported models over TF Serving's gRPC (and REST) API, for development",
        description="A local server speaking TensorFlow Serving's API. Flags are named as tensorflow_model_server's.")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (0: a free one)")
    serve.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST, as in TF Serving)")
    serve.add_argument("--model_name")
    serve.add_argument("--model_base_path")
    serve.add_argument("--model_config_file")
    serve.add_argument("--enable_batching", action="store_true")
    serve.add_argument("--batching_parameters_file")
    serve.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    serve.add_argument("--grpc_max_threads", type=int, default=16)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.set_defaults(func=_serve)

    predict = sub.add_parser("predict", help="query a served model over gRPC with image files")
    predict.add_argument("images", nargs="+", help="JPEG, PNG, GIF or BMP files")
    predict.add_argument("--server", default="localhost:8500", help="HOST:PORT of the gRPC endpoint")
    predict.add_argument("--model", required=True, help="model name")
    predict.add_argument("--version", type=int)
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--timeout", type=float, default=10.0)
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(func=_predict)

    demo = sub.add_parser("demo", help="kcnn's main job: train digits, export, serve, query over gRPC")
    demo.add_argument("--workdir", default=".", help="where runs/ and models/ go (default: here)")
    demo.set_defaults(func=_demo)
