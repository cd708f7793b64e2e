# TensorFlow Serving image for a kcnn model: the official tensorflow/serving image, pinned to the
# TensorFlow release kcnn exports with, plus an exported model tree and the generated configs.
#
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
FROM tensorflow/serving:${TF_SERVING_VERSION}${VARIANT}

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
