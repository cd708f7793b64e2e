# Two images from one Dockerfile: the trainer (kcnn on the official Python image, for training on a cluster)
# and, last and so the default, TensorFlow Serving for a kcnn model (the official tensorflow/serving image,
# pinned to the TensorFlow release kcnn exports with, plus an exported model tree and the generated configs).
#
# Trainer (serving/deploy/train-gke.yaml and train-vertex.yaml run it; README "Train on a cluster"):
#   docker build --target trainer -t kcnn-trainer .                                # CPU
#   docker build --target trainer --build-arg VARIANT=-gpu -t kcnn-trainer:gpu .   # GPU: tensorflow[and-cuda]
#   docker run --rm kcnn-trainer pipelines/configs/digits.yaml --run-dir gs://BUCKET/runs/digits
#   docker tag kcnn-trainer REGION-docker.pkg.dev/PROJECT/REPOSITORY/kcnn-trainer:0.1.0
#   docker push REGION-docker.pkg.dev/PROJECT/REPOSITORY/kcnn-trainer:0.1.0
# The arguments are kcnn train's (the entrypoint): a config from pipelines/configs/, --run-dir, --set.
#
# Serving:
#   kcnn train pipelines/configs/digits.yaml
#   kcnn export runs/digits --base-path models/digits
#   kcnn serving-config --model-name digits --batching --allowed-batch-sizes 1 2 4 8 16 32 --out serving/docker
#   docker build -t kcnn-digits .                                  # CPU
#   docker build --build-arg VARIANT=-gpu -t kcnn-digits:gpu .     # GPU (run with --gpus all)
#   docker run --rm -p 8500:8500 -p 8501:8501 kcnn-digits
#
# serving/docker/models.config names the model and its base path (/models/${MODEL_NAME});
# keep MODEL_NAME equal to the name in it. Warm-up records in each version's
# assets.extra/tf_serving_warmup_requests are replayed when a version loads.
ARG TF_SERVING_VERSION=2.21.0
ARG VARIANT=
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS trainer

# VARIANT=-gpu installs kcnn's gpu extra (tensorflow[and-cuda]: CUDA and cuDNN as pip wheels).
ARG VARIANT
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY kcnn/ kcnn/
COPY pipelines/ pipelines/
COPY serving/ serving/
RUN pip install --no-cache-dir ".${VARIANT:+[gpu]}" \
    && useradd --create-home --uid 1000 kcnn \
    && mkdir runs && chown kcnn runs

# Configs are read relative to /app (pipelines/configs/...); runs/ takes local run directories.
USER kcnn
ENTRYPOINT ["kcnn", "train"]

FROM tensorflow/serving:${TF_SERVING_VERSION}${VARIANT} AS serving

ARG MODEL_NAME=digits
ENV MODEL_NAME=${MODEL_NAME} \
    MODEL_BASE_PATH=/models

COPY models/${MODEL_NAME} /models/${MODEL_NAME}
COPY serving/docker/models.config serving/docker/batching.config serving/docker/monitoring.config /config/

# gRPC and REST.
EXPOSE 8500 8501

# The image's entrypoint starts tensorflow_model_server on 8500/8501; with --model_config_file the
# model name and base path come from models.config.
CMD ["--model_config_file=/config/models.config", \
     "--model_config_file_poll_wait_seconds=60", \
     "--enable_batching=true", \
     "--batching_parameters_file=/config/batching.config", \
     "--monitoring_config_file=/config/monitoring.config", \
     "--enable_model_warmup=true"]
