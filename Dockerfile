# Tunesmith on a CUDA GPU: the studio on 0.0.0.0:7860 behind a login, runs and exports on a volume.
#
#   docker build -t tunesmith .
#   docker run --gpus all -p 7860:7860 -v tunesmith:/data tunesmith
#       -> the container log prints a generated password once; its hash stays in /data
#   docker run --gpus all -p 7860:7860 -e TUNESMITH_AUTH=me:secret -v tunesmith:/data tunesmith
#
# The install steps are install.sh, the same script CI runs in a clean venv.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# The CUDA base image fixes the Ubuntu release; apt versions are not pinned so that a rebuild
# picks up that release's security updates instead of failing on a version the mirror dropped.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

# The studio runs as an unprivileged user that owns only the volume; the code and the venv stay
# root's, so a compromised studio cannot rewrite them. uid 1000 (the image's stock "ubuntu" user
# gives way) matches the first user on most Linux hosts, so a bind-mounted folder of theirs works.
RUN userdel --remove ubuntu 2>/dev/null; \
    groupadd --gid 1000 tunesmith \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin tunesmith \
    && mkdir -p /data && chown tunesmith:tunesmith /data

WORKDIR /opt/tunesmith
RUN python3 -m venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY . .
# The image is for CUDA machines (no GPU is visible while it builds, so say so); --gguf builds llama.cpp now.
RUN TUNESMITH_TORCH=cuda bash install.sh --gguf

# Runs, exports, uploads, the run registry and the login's hash live on the volume, so they outlive
# the container. With no TUNESMITH_AUTH, the first start generates a password, prints it once in the
# container log and keeps only its hash in TUNESMITH_LOGIN_FILE (delete that file for a new one).
ENV TUNESMITH_HOME=/data HF_HOME=/data/hf-cache TUNESMITH_LOGIN_FILE=/data/studio-login.json
VOLUME ["/data"]
# Numeric, so that runtimes can see it is not root (Kubernetes' runAsNonRoot checks the number).
USER 1000:1000
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]
# Reached by another name than an IP address or localhost (a cloud proxy's host name)? Add
# -e TUNESMITH_ALLOW_HOSTS=that.name; the studio refuses requests for names it does not know.
# A plain CMD, so `docker run ... tunesmith tunesmith train CONFIG.yaml` runs the CLI instead.
CMD ["tunesmith", "webui", "--host", "0.0.0.0", "--port", "7860"]
