# syntax=docker/dockerfile:1
#
# GPU engine: vLLM's official OpenAI server image with the ARC-Hunyuan-Video plugin.
#
#   docker build -f docker/engine.Dockerfile -t arc-video-serve/engine:0.1.0 .
#   docker run --gpus all --ipc=host -p 8000:8000 \
#       -v hf-cache:/home/arc/.cache/huggingface arc-video-serve/engine:0.1.0 \
#       TencentARC/ARC-Hunyuan-Video-7B --tensor-parallel-size 2
#
# The build context is the repository root (see /.dockerignore).

# The base image brings CUDA, torch and vllm==0.32.0; nothing below replaces them.
FROM vllm/vllm-openai:v0.32.0

# ffmpeg: the plugin's `arc` video loader decodes video_url bytes that are not already
# prepared by the gateway. fonts-liberation: Liberation Sans, the font of the timestamp
# overlay drawn on every frame (metric-compatible with the authors' Arial).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ffmpeg fonts-liberation \
 && rm -rf /var/lib/apt/lists/*

# The project with its `engine` extra (transformers, safetensors, ...; pyproject.toml lists
# neither vllm nor torch: the base image's are the ones used). Every package the base image
# already has is pinned by a constraints file made from the image itself, so this step only
# adds what is missing (ffmpeg-python, soundfile, ...) and can never upgrade or swap vllm,
# torch or transformers. pip and setuptools are left out of the constraints: the isolated
# build may need a newer setuptools.
# The sources come in through a bind mount: no layer keeps a copy of them.
RUN --mount=type=bind,target=/tmp/arc-src,rw \
    python3 -m pip list --format=freeze 2>/dev/null \
        | grep -viE '^(pip|setuptools|wheel)==' > /tmp/base-constraints.txt \
 && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir \
        -c /tmp/base-constraints.txt "/tmp/arc-src[engine]" \
 && rm -f /tmp/base-constraints.txt \
 && arc-serve --help > /dev/null

# An unprivileged user (fixed uid/gid 10001, so Kubernetes' runAsNonRoot can check it).
# vLLM's caches (torch.compile, Triton, FlashInfer, the hub's: mount a volume on HF_HOME)
# go under HOME; the chat template goes to /tmp.
RUN groupadd --system --gid 10001 arc \
 && useradd --system --uid 10001 --gid arc --create-home --home-dir /home/arc arc \
 && mkdir -p /home/arc/.cache/huggingface \
 && chown -R arc:arc /home/arc/.cache

ENV HOME=/home/arc \
    HF_HOME=/home/arc/.cache/huggingface

USER 10001:10001
WORKDIR /home/arc
EXPOSE 8000

# `arc-serve CHECKPOINT [vllm serve options]`: vLLM's OpenAI server with the chat template,
# the `arc` video loader, one video per prompt and --max-model-len 20480 as defaults.
ENTRYPOINT ["arc-serve"]
CMD ["TencentARC/ARC-Hunyuan-Video-7B"]
