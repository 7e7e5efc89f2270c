# syntax=docker/dockerfile:1
#
# Gateway: `arc-gateway`, the video front door (uploads, ffmpeg decode workers, OpenAI API)
# in front of vLLM. It imports the media library (`arc_media`: numpy, PIL, PyAV, ffmpeg) and
# never torch, transformers or vLLM: the Whisper features and pixel values are computed by
# the engine (vllm_plugin/features.py), so this image installs no torch at all.
#
#   docker build -f docker/gateway.Dockerfile -t arc-video-serve/gateway:0.1.0 .
#   docker run -p 8080:8080 -e ARC_GATEWAY_UPSTREAM_URL=http://engine:8000 \
#       -v arc-files:/data/files arc-video-serve/gateway:0.1.0
#
# Two stages: the first fills a virtual environment, the second is a clean slim image with
# that environment, ffmpeg and fonts, running as an unprivileged user.

# ---------------------------------------------------------------- build stage
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# The project and its base dependencies (pure Python or manylinux wheels: no compiler
# needed), no extras: no torch, no transformers, no vLLM. The import check loads the
# gateway and the media modules its workers run (the app's imports, e.g. python_multipart,
# come only with server.app), and torch must be absent. Then pip and setuptools leave the
# environment: nothing is installed at run time.
RUN --mount=type=bind,target=/tmp/arc-src,rw \
    pip install --no-cache-dir /tmp/arc-src \
 && python -c "import server.app, server.cli, arc_media.pipeline, arc_media.prepared" \
 && python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch'" \
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
