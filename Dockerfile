# Tunesmith on a CUDA GPU: the studio on 0.0.0.0:7860, password from the environment,
# runs and exports on a volume.
#
#   docker build -t tunesmith .
#   docker run --gpus all -p 7860:7860 -e TUNESMITH_AUTH=me:secret -v tunesmith:/data tunesmith
#
# The install steps are install.sh, the same script CI runs in a clean venv.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tunesmith
RUN python3 -m venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY . .
# The image is for CUDA machines (no GPU is visible while it builds, so say so); --gguf builds llama.cpp now.
RUN TUNESMITH_TORCH=cuda bash install.sh --gguf

# Runs, exports and the run registry live on the volume, so they outlive the container.
ENV TUNESMITH_HOME=/data HF_HOME=/data/hf-cache
VOLUME ["/data"]
EXPOSE 7860
# Binding 0.0.0.0 requires auth: the studio refuses to start unless TUNESMITH_AUTH=user:password is set.
CMD ["tunesmith", "webui", "--host", "0.0.0.0", "--port", "7860"]
