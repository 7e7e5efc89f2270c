# syntax=docker/dockerfile:1
#
# Gateway: `arc-gateway`, the video front door (uploads, ffmpeg decode workers, OpenAI API)
# in front of vLLM. It imports the project's preprocessing (`vllm_plugin.preprocess`, which
# needs torch for the Whisper features) but never vllm, so it runs on a CPU torch.
#
#   docker build -f docker/gateway.Dockerfile -t arc-video-serve/gateway:0.1.0 .
#   docker run -p 8080:8080 -e ARC_GATEWAY_UPSTREAM_URL=http://engine:8000 \
#       -v arc-files:/data/files arc-video-serve/gateway:0.1.0
#
# Two stages: the first fills a virtual environment, the second is a clean slim image with
# that environment, ffmpeg and fonts, running as an unprivileged user.

# ---------------------------------------------------------------- build stage
FROM python:3.11.14-slim-bookworm AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch's CPU wheel (about a fifth of the CUDA one) from the PyTorch index, in its own layer
# so that code changes do not download it again.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}+cpu" --index-url "${TORCH_CPU_INDEX}"

# The project and its dependencies (pure Python or manylinux wheels: no compiler needed).
# The import check loads every gateway module (the app's imports, e.g. python_multipart,
# come only with server.app). Then pip and setuptools leave the environment: nothing is
# installed at run time.
RUN --mount=type=bind,target=/tmp/arc-src,rw \
    pip install --no-cache-dir /tmp/arc-src \
 && python -c "import server.app, server.cli, vllm_plugin.preprocess, vllm_plugin.prepared_media" \
 && pip uninstall -y pip setuptools

# ---------------------------------------------------------------- final stage
FROM python:3.11.14-slim-bookworm

# ffmpeg/ffprobe for probing and decoding uploads, Liberation Sans for the timestamp
# overlay, tini as PID 1; an unprivileged user (fixed uid/gid 10001, so Kubernetes'
# runAsNonRoot can check it) owning the files directory. The base image's own pip goes too.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ffmpeg fonts-liberation tini \
 && rm -rf /var/lib/apt/lists/* \
 && python -m pip uninstall -y pip setuptools wheel \
 && groupadd --system --gid 10001 arc \
 && useradd --system --uid 10001 --gid arc --create-home --home-dir /home/arc arc \
 && mkdir -p /data/files \
 && chown arc:arc /data/files

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ARC_GATEWAY_HOST=0.0.0.0 \
    ARC_GATEWAY_PORT=8080 \
    ARC_GATEWAY_FILES_DIR=/data/files

USER 10001:10001
WORKDIR /home/arc
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ARC_GATEWAY_PORT', '8080'), timeout=4)"]

# tini is PID 1 wherever the image runs (Kubernetes has no `init: true`): it reaps ffmpeg
# processes orphaned when a decode worker dies and passes SIGTERM on to arc-gateway, which
# then lets accepted requests finish. Every option is a flag or an ARC_GATEWAY_* variable
# (`arc-gateway --help`).
ENTRYPOINT ["/usr/bin/tini", "--", "arc-gateway"]
