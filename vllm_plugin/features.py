"""The model tensors made from prepared media: Whisper log-mel features and pixel values.

This is the torch part of preprocessing, kept out of the media library (arc_media) so that
the gateway, which only forwards prepared frames and audio, needs no torch. The features
are whisper-large-v3's: 128 slaney mel bands over 0-8 kHz, each 30 s piece of the 16 kHz
audio on its own (its own max - 8 clamp), float32 [W, 128, 3000]. Pixel values are the
frames divided by 255 and CLIP-normalised in float32, then rounded to bfloat16, bit-exact
with the authors' tensors; `pixel_values` looks each 8-bit level up in a table that
`normalise` computed, which gives the same bits without a float32 copy of the frames.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from arc_media.model_inputs import SAMPLE_RATE

WINDOW_SAMPLES = 30 * SAMPLE_RATE  # one Whisper piece: 480000 samples
N_FFT = 400
HOP = 160
N_MELS = 128
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz, logarithmic above.
    freq = np.asarray(freq, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    linear = 3.0 * freq / 200.0
    log = 15.0 + np.log(np.maximum(freq, 1e-10) / 1000.0) / logstep
    return np.where(freq >= 1000.0, log, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    logstep = math.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), 200.0 * mels / 3.0)


@functools.lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """[201, 128] slaney-normalised triangular filters, 0-8 kHz (whisper-large-v3)."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(8000.0), N_MELS + 2))
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (edges[2 : N_MELS + 2] - edges[:N_MELS])
    return torch.from_numpy(filters.astype(np.float32))


def whisper_features(audio: np.ndarray) -> np.ndarray:
    """Log-mel features [W, 128, 3000] float32, each 30 s piece on its own (its own
    max - 8 clamp), W = ceil(len / 480000)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    windows = max(1, math.ceil(len(audio) / WINDOW_SAMPLES))
    pieces = np.zeros((windows, WINDOW_SAMPLES), dtype=np.float32)
    pieces.reshape(-1)[: len(audio)] = audio
    with torch.no_grad():
        x = torch.from_numpy(pieces)
        spec = torch.stft(
            x,
            N_FFT,
            HOP,
            window=torch.hann_window(N_FFT),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = (spec[..., :-1].abs() ** 2).contiguous()
        mel = mel_filters().T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0).numpy()


def normalise(values: torch.Tensor) -> torch.Tensor:
    """float32 [..., 3] channel-last 0-255 -> bf16: /255, CLIP mean/std in float32, then
    bf16 round-to-nearest-even (bit-exact with the authors' tensors)."""
    x = values.to(torch.float32, copy=True)  # a copy: the arithmetic runs in place
    x.div_(255).sub_(torch.tensor(CLIP_MEAN)).div_(torch.tensor(CLIP_STD))
    return x.to(torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _normalised_levels() -> np.ndarray:
    """[3, 256] int16: the bf16 bits `normalise` gives each 8-bit level of each channel."""
    levels = torch.arange(256, dtype=torch.float32).unsqueeze(1).expand(256, 3)
    return normalise(levels).T.contiguous().view(torch.int16).numpy()


def pixel_values(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> bf16 [N, 3, H, W], `normalise`d. An 8-bit channel has 256
    levels, so each pixel is a lookup in a table `normalise` computed: the same bits,
    3-4x faster than the arithmetic on every pixel, no float32 copy of the frames."""
    frames = np.asarray(frames, dtype=np.uint8)
    table = _normalised_levels()
    n, height, width, _ = frames.shape
    out = np.empty((n, 3, height, width), dtype=np.int16)
    for k in range(n):
        planes = frames[k].transpose(2, 0, 1).copy()  # one frame channel-first: cache-friendly
        for c in range(3):
            np.take(table[c], planes[c], out=out[k, c])
    return torch.from_numpy(out).view(torch.bfloat16)


__all__ = ["mel_filters", "normalise", "pixel_values", "whisper_features"]
