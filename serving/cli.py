"""``kcnn`` subcommands of the serving package. Importing this module stays cheap."""

from __future__ import annotations

import argparse
import os
import re


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
                            max_image_pixels=args.max_image_pixels, fold_bn=args.fold_bn,
                            freeze=args.freeze, task_options={"score_threshold": args.score_threshold,
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
    """A boolean flag value as TF Serving parses it (tensorflow/core/util/command_line_flags.cc): ``true`` or
    ``false`` exactly; a bare ``--flag`` is true."""
    if text in ("true", "false"):
        return text == "true"
    raise argparse.ArgumentTypeError(f"Couldn't interpret value {text!r}: TF Serving takes true or false")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _tf_integer(text: str, bits: int) -> int:
    # sscanf("%d%c") == 1: leading spaces, a sign and digits, nothing after them; within the type's range.
    limit = 1 << (bits - 1)
    if re.fullmatch(r"\s*[+-]?[0-9]+", text) and -limit <= int(text) < limit:
        return int(text)
    raise argparse.ArgumentTypeError(f"Couldn't interpret value {text!r} as an int{bits}")


def tf_int32(text: str) -> int:
    """An int32 flag value as TF Serving parses it."""
    return _tf_integer(text, 32)


def tf_int64(text: str) -> int:
    """An int64 flag value as TF Serving parses it."""
    return _tf_integer(text, 64)


def tf_float(text: str) -> float:
    """A float flag value as TF Serving parses it (sscanf "%f", nothing after the number)."""
    try:
        if text == text.rstrip() and "_" not in text:
            return float(text)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"Couldn't interpret value {text!r} as a float")


CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# Every flag of tensorflow_model_server (model_servers/main.cc's flag_list) with its type and default (main.cc,
# server.h's Server::Options), so a TF Serving command line runs unchanged: (name, type, default, what kcnn does).
# --version is added on its own (it answers at once) and --enable_signature_method_name_check next to the table.
SERVE_FLAGS = (
    ("port", tf_int32, 8500, "gRPC port (0: a free one; TF Serving refuses 0)"),
    ("grpc_socket_path", str, "", "also serve gRPC on this UNIX socket"),
    ("grpc_channel_arguments", str, "",
     "comma-separated KEY=VALUE arguments of the gRPC server, e.g. grpc.max_connection_age_ms=2000 (a value that "
     "reads as an int32 goes as an integer)"),
    ("grpc_max_threads", tf_int32, 4 * CPUS, "gRPC worker threads (TF Serving's default: 4 per CPU)"),
    ("ssl_config_file", str, "", "SSLConfig for a TLS gRPC port"),
    ("use_alts_credentials", tf_bool, False, "Google ALTS credentials for gRPC"),
    ("enable_grpc_healthcheck_service", tf_bool, False, "the standard grpc.health.v1 service"),
    ("rest_api_port", tf_int32, 0, "REST port (0: no REST)"),
    ("rest_api_num_threads", tf_int32, 4 * CPUS, "REST worker threads (TF Serving's default: 4 per CPU)"),
    ("rest_api_timeout_in_ms", tf_int32, 30000, "REST socket read timeout in milliseconds"),
    ("rest_api_enable_cors_support", tf_bool, False,
     "REST API answers carry TF Serving's CORS headers (Access-Control-Allow-Origin: *, -Methods: POST, GET, "
     "-Headers: Content-Type)"),
    ("model_name", str, "default", "model name with --model_base_path"),
    ("model_base_path", str, "", "directory of numbered version directories"),
    ("model_config_file", str, "", "ModelServerConfig in text format (models.config)"),
    ("model_config_file_poll_wait_seconds", tf_int32, 0, "re-read --model_config_file this often (0: read once)"),
    ("file_system_poll_wait_seconds", tf_int32, 1, "look for new versions this often (0: only at start)"),
    ("allow_version_labels_for_unavailable_models", tf_bool, False,
     "version labels may point at versions not yet available"),
    ("num_load_threads", tf_int32, 0, "threads loading versions (0: one at a time, in the manager's loop)"),
    ("num_unload_threads", tf_int32, 0, "threads unloading versions (0: one at a time, in the manager's loop)"),
    ("max_num_load_retries", tf_int32, 5, "retries of a failed version load"),
    ("load_retry_interval_micros", tf_int64, 60_000_000, "wait between load retries, in microseconds"),
    ("flush_filesystem_caches", tf_bool, True, "no effect in kcnn, which keeps no filesystem cache to flush"),
    ("saved_model_tags", str, "serve", "comma-separated tags of the MetaGraph to load"),
    ("enable_model_warmup", tf_bool, True,
     "replay assets.extra/tf_serving_warmup_requests before a version serves"),
    ("num_request_iterations_for_warmup", tf_int32, 0, "times each warm-up request is replayed (0: once)"),
    ("remove_unused_fields_from_bundle_metagraph", tf_bool, True,
     "no effect in kcnn, which keeps only the signatures of the MetaGraph"),
    ("prefer_tflite_model", tf_bool, False, "load model.tflite instead of saved_model.pb when there is one"),
    ("num_tflite_pools", tf_int32, CPUS, "TF Lite interpreter pools (used only with --prefer_tflite_model)"),
    ("num_tflite_interpreters_per_pool", tf_int32, 1,
     "interpreters per TF Lite pool (used only with --prefer_tflite_model)"),
    ("platform_config_file", str, "", "PlatformConfigMap in text format"),
    ("enable_batching", tf_bool, False, "batch concurrent requests"),
    ("batching_parameters_file", str, "", "BatchingParameters in text format (batching.config)"),
    ("enable_per_model_batching_parameters", tf_bool, False, "read batching_params.pbtxt from each SavedModel"),
    ("tensorflow_session_parallelism", tf_int64, 0,
     "TensorFlow's intra- and inter-op threads both (0: TensorFlow picks)"),
    ("tensorflow_intra_op_parallelism", tf_int64, 0, "threads one op may use (0: TensorFlow picks)"),
    ("tensorflow_inter_op_parallelism", tf_int64, 0, "ops that may run at once (0: TensorFlow picks)"),
    ("tensorflow_session_config_file", str, "", "a TensorFlow Session ConfigProto in text format"),
    ("per_process_gpu_memory_fraction", tf_float, 0.0, "the share of GPU memory TensorFlow takes"),
    ("xla_cpu_compilation_enabled", tf_bool, False, "TensorFlow's XLA:CPU JIT"),
    ("xla_gpu_compilation_enabled", tf_bool, False, "TensorFlow's XLA:CPU and XLA:GPU JIT"),
    ("mixed_precision", str, "", "the mixed-precision mode models run in"),
    ("thread_pool_factory_config_file", str, "", "ThreadPoolConfig in text format"),
    ("enable_serialization_as_tensor_content", tf_bool, False, "Predict answers in tensor_content"),
    ("enable_profiler", tf_bool, True, "TF Serving's profiler service (kcnn registers none, whatever the value)"),
    ("skip_initialize_tpu", tf_bool, False, "no effect in kcnn, which initialises no TPU"),
    ("monitoring_config_file", str, "",
     "MonitoringConfig in text format; Prometheus metrics on the REST port at its path"),
)
# The flags whose behaviour kcnn's local server does not have: the default (and what equals it) is accepted, any
# other value is refused with this reason rather than ignored.
REFUSED_FLAGS = {
    "ssl_config_file": "kcnn's local server speaks plaintext gRPC only; serve TLS with the tensorflow/serving image "
                       "or a TLS proxy in front",
    "use_alts_credentials": "kcnn's local server speaks plaintext gRPC only (no ALTS)",
    "enable_grpc_healthcheck_service": "kcnn registers no grpc.health.v1 service (grpcio-health-checking is not a "
                                       "dependency); probe GetModelStatus or GET /v1/models/NAME instead",
    "allow_version_labels_for_unavailable_models": "kcnn serves labels of available versions only",
    "num_load_threads": "kcnn loads versions one at a time, in its poll loop",
    "num_unload_threads": "kcnn unloads versions one at a time, in its poll loop",
    "num_request_iterations_for_warmup": "kcnn replays each warm-up record once",
    "prefer_tflite_model": "kcnn serve loads saved_model.pb only (kcnn export --format litert writes .tflite for "
                           "LiteRT, not for serving)",
    "platform_config_file": "kcnn serves TensorFlow SavedModels with its own loader and reads no PlatformConfigMap",
    "enable_per_model_batching_parameters": "kcnn batches every model with the one --batching_parameters_file",
    "tensorflow_session_config_file": "kcnn reads no Session ConfigProto; set threads with "
                                      "--tensorflow_intra_op_parallelism and --tensorflow_inter_op_parallelism",
    "per_process_gpu_memory_fraction": "kcnn does not partition GPU memory",
    "xla_cpu_compilation_enabled": "kcnn serve leaves TensorFlow's XLA JIT as TensorFlow sets it",
    "xla_gpu_compilation_enabled": "kcnn serve leaves TensorFlow's XLA JIT as TensorFlow sets it",
    "mixed_precision": "kcnn serves each graph in the dtypes it was exported with",
    "thread_pool_factory_config_file": "kcnn runs requests on its own gRPC and REST worker threads",
    "enable_serialization_as_tensor_content": "kcnn answers in the typed fields (float_val, int_val, ...)",
}
ALSO_ACCEPTED = {"num_request_iterations_for_warmup": (1,)}  # 0 and 1 both replay each record once
# kcnn loads each version's only MetaGraph, which kcnn export tags "serve": the one tag set it can honour.


def shown_flag_value(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def refuse_unsupported_flags(args) -> None:
    """ValueError, one line naming the flag, for a setting kcnn's local server does not implement."""
    defaults = {name: default for name, _, default, _ in SERVE_FLAGS}
    for name, reason in REFUSED_FLAGS.items():
        value = getattr(args, name)
        if value != defaults[name] and value not in ALSO_ACCEPTED.get(name, ()):
            raise ValueError(f"--{name}={shown_flag_value(value)} is not supported: {reason}")


def saved_model_tags(text: str) -> tuple:
    """``--saved_model_tags`` as TF Serving reads it (main.cc: absl::StrSplit on ',' into a set)."""
    return tuple(sorted(set(text.split(","))))


def grpc_channel_arguments(text: str) -> list:
    """``--grpc_channel_arguments`` as TF Serving's parseGrpcChannelArgs and BuildAndStart read it (server.cc):
    split on commas, then each on '='; the value after the first '=' (up to any next one) goes as an integer when
    it reads as an int32 (safe_strto32: spaces around a signed number), else as a string."""
    arguments = []
    for item in text.split(",") if text else []:
        parts = item.split("=")
        if len(parts) < 2:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not KEY=VALUE")
        key, value = parts[0], parts[1]
        number = re.fullmatch(r"\s*([+-]?[0-9]+)\s*", value)
        if number and -(1 << 31) <= int(number.group(1)) < (1 << 31):
            arguments.append((key, int(number.group(1))))
        else:
            arguments.append((key, value))
    return arguments


def set_tensorflow_threads(args) -> None:
    """TF Serving's thread flags (server.cc BuildAndStart) on TensorFlow's threading, before any model loads:
    intra/inter-op when either is set (0 lets TensorFlow pick), else --tensorflow_session_parallelism for both."""
    intra, inter, session = (args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism,
                             args.tensorflow_session_parallelism)
    if intra > 0 and inter > 0 and session > 0:
        raise ValueError("Either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
                         "--tensorflow_inter_op_parallelism) separately. You cannot configure all.")
    if intra <= 0 and inter <= 0:
        intra = inter = session
    if intra <= 0 and inter <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(intra, 0))
        tf.config.threading.set_inter_op_parallelism_threads(max(inter, 0))
    except RuntimeError as error:  # TensorFlow's runtime already started in this process
        raise ValueError(f"cannot set TensorFlow's threads: {error}") from None


class VersionFlag(argparse.Action):
    """TF Serving's --version (a bool flag): print the versions and exit 0, before anything loads."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values:
            from importlib import metadata

            from kcnn import __version__
            from serving.config import TF_SERVING_VERSION

            try:
                tensorflow = metadata.version("tensorflow")
            except metadata.PackageNotFoundError:
                tensorflow = "not installed"
            print(f"kcnn ModelServer: {__version__} (TensorFlow Serving {TF_SERVING_VERSION}'s APIs)\n"
                  f"TensorFlow Library: {tensorflow}", flush=True)
            parser.exit(0)
        setattr(namespace, self.dest, False)


def _serve(args) -> int:
    import logging
    import sys

    from serving.config import ModelEntry, PROMETHEUS_PATH, models_from_config, read_batching_config
    from serving.config import read_monitoring_config
    from serving.models import Lifecycle, StartupError
    from serving.server import Server
    from serving.tensors import DEFAULT_MAX_ELEMENTS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    refuse_unsupported_flags(args)
    if args.batching_parameters_file and not args.enable_batching:  # TF Serving's BuildAndStart refuses it too
        raise ValueError("--batching_parameters_file is set without --enable_batching=true")
    channel_arguments = grpc_channel_arguments(args.grpc_channel_arguments)
    set_tensorflow_threads(args)
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
                          args.load_retry_interval_micros / 1e6, saved_model_tags(args.saved_model_tags))
    server = Server(models, port=args.port, rest_api_port=args.rest_api_port or None, host=args.host,
                    batching=batching, poll_seconds=args.file_system_poll_wait_seconds,
                    max_workers=args.grpc_max_threads, lifecycle=lifecycle, max_elements=args.max_request_elements or DEFAULT_MAX_ELEMENTS,
                    memory_mb=args.max_request_memory_mb,
                    rest_threads=args.rest_api_num_threads, rest_timeout_ms=args.rest_api_timeout_in_ms,
                    prometheus_path=prometheus_path, model_config_file=args.model_config_file,
                    config_poll_seconds=args.model_config_file_poll_wait_seconds,
                    enable_signature_method_name_check=args.enable_signature_method_name_check,
                    grpc_channel_arguments=channel_arguments, grpc_socket_path=args.grpc_socket_path,
                    rest_cors=args.rest_api_enable_cors_support)
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
    export.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                        help="keep batch norm as separate ops (by default each batch norm that follows a convolution "
                             "is folded into its kernel and bias: the same outputs to float round-off, fewer ops)")
    export.add_argument("--no-freeze", dest="freeze", action="store_false",
                        help="keep the weights as variables in variables/ (by default the signatures hold them as "
                             "constants, which TensorFlow's CPU convolutions run faster: the same outputs; models "
                             "over 1 GiB of weights are never frozen)")
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
        allow_abbrev=False,
        description="A local server speaking TensorFlow Serving's API. It takes every flag of tensorflow_model_server, "
                    "with its types, defaults and syntax (--port=8500, also --port 8500 here; booleans bare, =true "
                    "or =false); a flag whose behaviour kcnn does not have is refused unless left at its default. "
                    "Unlike TF Serving, which listens on every interface (0.0.0.0), kcnn binds 127.0.0.1 unless "
                    "--host says otherwise (--host=0.0.0.0 for every interface). The ports open once the models "
                    "have loaded.")
    for name, parse, default, what in SERVE_FLAGS:
        boolean = parse is tf_bool
        refused = f" kcnn: only the default; {REFUSED_FLAGS[name]}." if name in REFUSED_FLAGS else ""
        shown_default = f" (default {shown_flag_value(default)})" if default not in ("", 0) or boolean else ""
        serve.add_argument(f"--{name}", type=parse, default=default, nargs="?" if boolean else None,
                           const=True if boolean else None, metavar="true|false" if boolean else None,
                           help=f"{what}{shown_default}.{refused}")
    serve.add_argument("--version", type=tf_bool, nargs="?", const=True, default=False, action=VersionFlag,
                       metavar="true|false", help="print the versions and exit")
    serve.add_argument("--enable_signature_method_name_check", type=tf_bool, nargs="?", const=True, default=False,
                       help="Classify and Regress first require the signature's method_name to be "
                            "tensorflow/serving/classify or .../regress, which TF2 SavedModels never have "
                            "(default false, as TF Serving's)")
    serve.add_argument("--max_request_elements", type=int,
                       help="kcnn's limit on the elements one request tensor may declare, checked before allocating "
                            "(default 50331648: one 4096x4096 RGB image)")
    from serving.memory import DEFAULT_MEMORY_MB

    serve.add_argument("--max_request_memory_mb", type=positive_float, default=DEFAULT_MEMORY_MB,
                       help="kcnn's bound on the memory the requests in flight may hold at once, estimated before "
                            "their tensors are built (declared shapes, image headers); a request waits for room, "
                            f"one larger than the bound runs alone (default {DEFAULT_MEMORY_MB})")
    serve.add_argument("--host", default="127.0.0.1",
                       help="kcnn's: the address both ports bind. Default 127.0.0.1, this machine only, where TF "
                            "Serving binds 0.0.0.0; --host=0.0.0.0 listens on every interface as TF Serving does "
                            "(anyone who reaches the machine can then query the models)")
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
