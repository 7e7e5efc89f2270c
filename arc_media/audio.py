"""The waveform the model hears: 16 kHz mono float32, made the way the authors' audio was.

The authors exported each video's audio with moviepy (an mp3) and read it back with
librosa; we rebuild that path with an ffmpeg child (the encoder) and an in-process decoder,
because the model was trained on it.
Measured on the golden clips (mean |Δ| of our log-mel features against the golden
audio_features.npy; wall time of this step for the 7.5 / 26 / 30 s clips, 2 cores,
ffmpeg 5.1; downmix TO_MONO and the soxr resampler unless a row says otherwise):

    path                                   w33698kgs05  c3522vbgwaw  q35134y59x8  time
    direct, ffmpeg -ac 1, swr              0.1064       0.1511       0.1367       0.13-0.14 s
    direct                                 0.0443       0.1279       0.1151       0.09-0.12 s
    direct + HE-AAC lag                    0.0111       0.0244       0.0223       0.09-0.13 s
    mp3 round trip + HE-AAC lag (chosen)   0.0069       0.0271       0.0231       0.24-0.62 s

    synthetic mono LC-AAC tones            syn_short    syn_200s     syn_400s
    direct, mono kept as is                0.0861 0.08s 0.0869 0.23s 0.0892 0.27s
    direct                                 0.0110 0.08s 0.0159 0.29s 0.0178 0.31s
    mp3 round trip (chosen)                0.0005 0.16s 0.0076 1.89s 0.0091 3.51s

What the rows decided:
(1) moviepy reads every track as stereo (ffmpeg's `-ac 2`, which upmixes mono at -3 dB) and
    librosa averages the two channels; ffmpeg's `-ac 1` does neither, so we go through
    stereo and `pan` ourselves (TO_MONO).
(2) The real clips are HE-AAC (SBR), and the authors' decoder delivered their audio ~19.8 ms
    (about the 2x481-sample SBR decoder delay at 48 kHz) later than ffmpeg 5.1 does; LC-AAC
    needs no shift. HE-AAC audio is delayed by HE_AAC_LAG_S, keeping its length.
(3) moviepy writes exactly int(44100 * d) samples, d = the container duration as ffmpeg
    prints it (1/100 s): we pad/cut the same way (`export_samples`); syn_200s decodes to
    200.02 s, which would otherwise make D 201 where the golden says 200.
(4) The mp3 round trip (libmp3lame 128 kb/s, 44.1 kHz stereo s16) is the default: as close
    as direct on speech and 2-20x closer on clean tones, where the mp3 noise floor decides
    the -8 clamp of the features. It costs one mp3 encode (~120x real time on one core, in
    parallel with the frames); `audio_mode="direct"` stays for where speed matters more.
    Through a pipe the mp3 has no LAME header, so the decoder cannot drop the encoder delay:
    we drop MP3_DELAY_SAMPLES ourselves.
Then `fit_audio`: above 300 s, 150 snippets of 2 s; under 1 s, zero-padded to 1 s.
(5) Above 300 s only the snippets' stretches go through the mp3 encoder (`_stretches`):
    aselect in the encoder's graph, after the 44.1 kHz resampler (which still sees the whole
    track), keeps blocks of 80 ms (on the 16 kHz grid). Skipped gaps are whole multiples of
    1.28 s (49 mp3 frames), so the encoder's frames fall where they fall in the whole track
    and LAME settles to the same output within about a second; with skips of any other
    length it never does (mp3 noise of another draw: features 0.0104 off on speech600).
    Mean |Δ| of the features against the whole track's round trip (`whole=True`):

    clip (length, audio)                 stretches  encoded   features mean |Δ| (max)
    syn_400s (400 s, mono tone)          1          400 s     0 (bit-identical: no gap fits)
    tone600 (600 s, stereo 440 Hz)       150        407 s     0.0000006 (0.04)
    speech600 (600 s, speech + noise)    150        407 s     0.00014 (0.41)
    speech1800 (1800 s, speech + noise)  150        455 s     0.00006 (0.26)

    Below 600 s (segments under 4 s) no whole 1.28 s fits between two snippets with their
    margins, and the whole track is encoded as before.
(6) The mp3 comes back through the encoder's pipe into this process (`_decode_mp3_here`):
    PyAV decodes it, numpy drops the delay and averages the channels, libsoxr resamples
    with ffmpeg's soxr settings (python-soxr, which ships libsoxr 0.1.3 as Debian's ffmpeg
    links it). Bit-identical to the second ffmpeg process it replaces on all 7 shared clips,
    the 6 synthetic test clips and 600 s clips; what it saves is that process's start
    (~65 ms CPU). Tried first:

    in process                       why not
    PyAV aresample=...:soxr          PyAV 18.1's own FFmpeg 8 has no soxr (the graph fails)
    PyAV encodes too (no child)      FFmpeg 8's AAC decoder is not ffmpeg 5.1's: HE-AAC comes
                                     944 samples (19.7 ms) later, LC-AAC 1 LSB off in s16 (and
                                     so another mp3): max |Δ| PCM 0.57-1.06 on the real clips,
                                     1e-5..1e-4 on tones, 0.068 on speech600
    libsoxr through ctypes           bit-identical too, but our own binding of a system
                                     library where a kept package does it

    load_audio, median of 5 (3 at 1800 s), wall / CPU s, 2 shared cores, before -> after (5)+(6):
    w33698kgs05 7.5 s HE-AAC         0.228 / 0.219 -> 0.156 / 0.154
    c3522vbgwaw 26 s HE-AAC          0.528 / 0.548 -> 0.484 / 0.484
    q35134y59x8 30 s HE-AAC          0.577 / 0.574 -> 0.507 / 0.505
    syn_short, short 0.6 s           0.162 / 0.159 -> 0.086 / 0.082;  0.080 / 0.136 -> 0.080 / 0.079
    vp9 3 s Opus, hevc 2 s, plain 4 s  0.107-0.167 / 0.162-0.176 -> 0.097-0.117 / 0.096-0.123
    syn_200s, long160, long310       2.05 / 1.72, 1.19 / 1.65, 2.27 / 3.08 -> 1.73 / 1.82,
                                     1.17 / 1.56, 2.51 / 3.29 (within the noise: the decoder's
                                     work moves in process, ~0.3 s CPU per 200 s either way)
    syn_400s                         3.42 / 3.54 -> 3.41 / 3.37 (whole track, as before)
    tone600, speech600               5.79 / 6.21, 7.05 / 7.39 -> 4.35 / 4.44, 5.02 / 5.02
    speech1800                       19.8 / 23.2 -> 6.36 / 6.96
    prepare_video (frames in parallel) is unchanged in wall time on the 7.5-200 s clips.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path

import av
import numpy as np
import soxr

from . import ffmpeg
from .limits import DEFAULT_LIMITS, MediaError
from .model_inputs import MAX_AUDIO_SECONDS, MAX_FRAMES, SAMPLE_RATE
from .probe import VideoProbe

SNIPPET_SAMPLES = 2 * SAMPLE_RATE
HE_AAC_LAG_S = 0.0198
# Samples before the first real one when an mp3 from libmp3lame is decoded: LAME's encoder
# delay (576) plus the mp3 decoder's (528 + 1). The LAME header of an mp3 file says so to
# a reader (ffmpeg, libsndfile); our pipe has none.
MP3_DELAY_SAMPLES = 576 + 529
AUDIO_MODES = ("mp3", "direct")
# Above 300 s, where `fit_audio` keeps 150 snippets of 2 s, only stretches around them go
# through the mp3 round trip (`_stretches`), counted in blocks of 80 ms (3528 samples at
# 44.1 kHz, 1280 at 16 kHz, so every stretch is on the 16 kHz grid of the whole track).
# Each starts PRE_MARGIN_BLOCKS before its snippet and ends at least POST_MARGIN_BLOCKS after
# it, and what is left out between two stretches is a whole number of SKIP_BLOCKS (1.28 s =
# 49 mp3 frames of 1152 samples): the encoder's frames then fall where they fall in the whole
# track, and LAME's output settles to the whole track's within the margin.
BLOCK_EXPORT, BLOCK_16K = 3528, 1280
SKIP_BLOCKS = 16
PRE_MARGIN_BLOCKS = 6
POST_MARGIN_BLOCKS = 1
EXPORT_RATE = 44100
# What the authors' audio went through before the features: moviepy reads every track as
# stereo (ffmpeg's own downmix/upmix, `-ac 2`), librosa averages the two channels. ffmpeg's
# `-ac 1` would weight them differently.
TO_MONO = "aformat=channel_layouts=stereo,pan=mono|c0=0.5*c0+0.5*c1"
RESAMPLE = f"aresample={SAMPLE_RATE}:resampler=soxr"


def export_samples(seconds: float) -> int:
    """How many 44.1 kHz samples the authors' moviepy export writes: int(44100 * d), with d
    the duration as ffmpeg prints it (rounded to 1/100 s) and moviepy parses it back.
    Shorter audio is zero-padded to that length, longer audio cut."""
    micros = round(seconds * 1_000_000) + 5000
    whole, centis = divmod(micros // 10_000, 100)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parsed = 3600 * hours + 60 * minutes + float(f"{secs:02d}.{centis:02d}")
    return int(EXPORT_RATE * parsed)


def _fix_length(audio: np.ndarray, samples: int) -> np.ndarray:
    if len(audio) >= samples:
        return audio[:samples]
    return np.pad(audio, (0, samples - len(audio)))


def _stretches(starts: list[int], export: int) -> list[tuple[int, int]]:
    """The blocks [first, last) of the 44.1 kHz export that the 16 kHz snippets starting at
    `starts` (SNIPPET_SAMPLES long, indices before the HE-AAC lag) need, margins included.
    The gaps between them are whole SKIP_BLOCKS (the rest goes to the margin before the next
    snippet, where the encoder settles); stretches with less between them merge."""
    blocks = -(-export // BLOCK_EXPORT)
    stretches: list[tuple[int, int]] = []
    for start in starts:
        first = max(0, start // BLOCK_16K - PRE_MARGIN_BLOCKS)
        last = min(blocks, -(-(start + SNIPPET_SAMPLES) // BLOCK_16K) + POST_MARGIN_BLOCKS)
        if stretches:
            before, end = stretches[-1]
            skip = max(0, first - end) // SKIP_BLOCKS * SKIP_BLOCKS
            if not skip:
                stretches[-1] = (before, max(end, last))
                continue
            first = end + skip  # what is not skipped widens the margin before the snippet
        stretches.append((first, last))
    return stretches


def _sum(terms: list[str]) -> str:
    """An ffmpeg expression adding `terms` as a balanced tree: ffmpeg refuses a flat sum of
    more than about 100 terms."""
    if len(terms) == 1:
        return terms[0]
    half = len(terms) // 2
    return f"({_sum(terms[:half])}+{_sum(terms[half:])})"


def _mp3_round_trip(
    path: Path,
    clip: tuple[float, float] | None,
    export: int,
    timeout_s: float | None,
    stretches: list[tuple[int, int]] | None = None,
) -> np.ndarray:
    """The authors' moviepy export: 44.1 kHz stereo 16-bit PCM, exactly `export` samples,
    into libmp3lame at its default 128 kb/s; read back gapless, as librosa reads the file:
    without the encoder delay and the padding. One ffmpeg process encodes; the mp3 is
    decoded from its pipe as it comes, in this process (`_decode_mp3_here`). A pipe carries no
    LAME header, so the decoder cannot drop the delay itself: we drop MP3_DELAY_SAMPLES.
    Bit-identical to writing an mp3 file and reading it back (tests/media/test_preprocess.py).

    `stretches` (blocks, see `_stretches`): only those stretches of the export go into the
    encoder, one after the other (aselect after the 44.1 kHz resampler, which still sees the
    whole track); the result is their 16 kHz samples one after the other."""
    fitted = f"aresample={EXPORT_RATE},apad=whole_len={export},atrim=end_sample={export}"
    encoded = export
    if stretches:
        # frames of one block, numbered n = block; aselect keeps the stretches' blocks
        kept = _sum([f"between(n,{first},{last - 1})" for first, last in stretches])
        fitted += f",asetnsamples=n={BLOCK_EXPORT}:p=0,aselect='{kept}'"
        encoded = sum(
            min(export, last * BLOCK_EXPORT) - first * BLOCK_EXPORT for first, last in stretches
        )
    encode = ffmpeg.safe_input(path, clip=clip)["a:0"].output(
        "pipe:1",
        format="mp3",
        af=fitted,
        acodec="libmp3lame",
        ar=EXPORT_RATE,
        ac=2,
        sample_fmt="s16p",
        audio_bitrate="128k",
    )
    encoder = ffmpeg.Process(ffmpeg.command(encode), timeout_s, "ffmpeg (audio export)")
    return _decode_mp3_here(encoder, encoded)


def _decode_mp3_here(encoder: ffmpeg.Process, encoded: int) -> np.ndarray:
    """What a second ffmpeg process (`atrim` of the delay, `TO_MONO`, `RESAMPLE`) gives, bit
    for bit, without that process: PyAV decodes the mp3 from the encoder's pipe (FFmpeg's
    float mp3 decoder), numpy trims and averages the channels (0.5 L + 0.5 R in float32, as
    `pan` does) and libsoxr resamples with the settings of ffmpeg's soxr resampler."""
    assert encoder.proc.stdout is not None
    first, end = MP3_DELAY_SAMPLES, MP3_DELAY_SAMPLES + encoded
    resampler = _resampler()
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    batched = seen = 0
    failure: Exception | None = None
    try:
        with av.open(encoder.proc.stdout, mode="r", format="mp3") as container:
            for frame in container.decode(audio=0):
                if frame.format.name != "fltp" or len(frame.planes) != 2:
                    raise MediaError(f"unexpected mp3 decoder output {frame.format.name}")
                count = frame.samples
                a, b = max(first - seen, 0), min(end - seen, count)
                seen += count
                if b > a:
                    left, right = (np.frombuffer(p, np.float32, count)[a:b] for p in frame.planes)
                    batch.append(0.5 * left + 0.5 * right)
                    batched += b - a
                if batched >= RESAMPLE_BATCH:
                    out.append(resampler.resample_chunk(np.concatenate(batch)))
                    batch, batched = [], 0
        rest = np.concatenate(batch) if batch else np.zeros(0, dtype=np.float32)
        out.append(resampler.resample_chunk(rest, last=True))
    except (av.FFmpegError, MediaError) as error:
        failure = error
        encoder.proc.stdout.close()  # an encoder still writing gets a broken pipe
    except BaseException:
        encoder.kill()
        raise
    code, err = encoder.finish()
    # A decoder that failed first leaves the encoder a broken pipe: report the decoder.
    if code != 0 and not (failure is not None and code == -signal.SIGPIPE):
        raise MediaError(f"ffmpeg (audio export) failed: {ffmpeg.last_lines(err)}")
    if failure is not None:
        raise MediaError(f"audio decode failed: {failure}")
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


# 44.1 kHz samples resampled at a time
RESAMPLE_BATCH = 1 << 16


def _resampler() -> soxr.ResampleStream:
    """44.1 kHz -> 16 kHz mono float32, streaming: libsoxr's HQ recipe (20-bit precision,
    no flags), what ffmpeg's `aresample=16000:resampler=soxr` asks libsoxr for, so the
    same samples as `RESAMPLE` (tests/media/test_audio_path.py)."""
    return soxr.ResampleStream(EXPORT_RATE, SAMPLE_RATE, 1, dtype="float32", quality="HQ")


def _lengths(probe: VideoProbe, clip: tuple[float, float] | None) -> tuple[int, int]:
    """(samples of the 44.1 kHz export, samples at 16 kHz)."""
    export = export_samples((clip[1] - clip[0]) if clip is not None else probe.duration)
    # librosa.resample's output length (soxr_hq, fix=True)
    return export, math.ceil(export * SAMPLE_RATE / EXPORT_RATE)


def _he_aac_lag(probe: VideoProbe) -> int:
    """16 kHz samples by which the track is delayed (HE-AAC only, see (2) above)."""
    if probe.audio_codec == "aac" and (probe.audio_profile or "").startswith("HE-AAC"):
        return round(HE_AAC_LAG_S * SAMPLE_RATE)
    return 0


def _snippet_starts(samples: int, lag: int) -> list[int] | None:
    """Where `fit_audio`'s snippets start in the decoded audio (before the lag, so the
    first may start before 0), or None when it keeps the audio whole."""
    if samples <= MAX_AUDIO_SECONDS * SAMPLE_RATE:
        return None
    seg = samples // MAX_FRAMES
    return [i * seg - lag for i in range(MAX_FRAMES)]


def _decode_pcm(
    path: Path,
    probe: VideoProbe,
    *,
    mode: str,
    clip: tuple[float, float] | None,
    timeout_s: float | None,
) -> np.ndarray:
    """The audio track as 16 kHz mono float32, `export_samples()` long (resampled)."""
    if mode not in AUDIO_MODES:
        raise ValueError(f"unknown audio mode {mode!r}; choose one of {', '.join(AUDIO_MODES)}")
    export, samples = _lengths(probe, clip)
    if mode == "direct":
        stream = ffmpeg.safe_input(path, clip=clip)["a:0"].output(
            "pipe:1", format="f32le", af=f"{TO_MONO},{RESAMPLE}", ac=1
        )
        raw = ffmpeg.run(ffmpeg.command(stream), timeout_s, "ffmpeg (audio)")
    else:
        return _fix_length(_mp3_round_trip(path, clip, export, timeout_s), samples)
    return _fix_length(np.frombuffer(raw, dtype="<f4").astype(np.float32), samples)


def _decode_snippets(
    path: Path,
    clip: tuple[float, float] | None,
    export: int,
    starts: list[int],
    stretches: list[tuple[int, int]],
    timeout_s: float | None,
) -> np.ndarray:
    """`fit_audio`'s 150 snippets (lag included) from an mp3 round trip of `stretches`
    only: what `fit_audio` keeps of the whole track's round trip."""
    joined = _mp3_round_trip(path, clip, export, timeout_s, stretches)
    # (first sample in the track, first sample in `joined`) of each stretch, at 16 kHz
    places, offset = [], 0
    for first, last in stretches:
        places.append((first * BLOCK_16K, offset * BLOCK_16K))
        offset += last - first
    pieces = []
    for start in starts:
        first = max(start, 0)
        track_at, joined_at = next(place for place in reversed(places) if place[0] <= first)
        piece = joined[
            joined_at + first - track_at : joined_at + start + SNIPPET_SAMPLES - track_at
        ]
        before = first - start  # the HE-AAC lag's zeros
        pieces.append(np.pad(piece, (before, SNIPPET_SAMPLES - before - len(piece))))
    return np.concatenate(pieces)


def fit_audio(audio: np.ndarray) -> np.ndarray:
    """> 300 s -> 150 snippets of the first 2 s of equal segments; < 1 s -> zero-pad to 1 s."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) > MAX_AUDIO_SECONDS * SAMPLE_RATE:
        seg = len(audio) // MAX_FRAMES
        audio = np.concatenate(
            [audio[i * seg : i * seg + SNIPPET_SAMPLES] for i in range(MAX_FRAMES)]
        )
    if len(audio) < SAMPLE_RATE:
        audio = np.pad(audio, (0, SAMPLE_RATE - len(audio)))
    return np.ascontiguousarray(audio)


def load_audio(
    source: str | Path,
    probe: VideoProbe,
    *,
    mode: str = "mp3",
    clip: tuple[float, float] | None = None,
    timeout_s: float | None = DEFAULT_LIMITS.timeout_s,
    whole: bool = False,
) -> np.ndarray:
    """The waveform the model hears: float32, 16 kHz, mono (silence when the file has no
    audio track, 150 x 2 s snippets above 300 s, padded to at least 1 s). Above 300 s the
    mp3 round trip covers only the snippets' stretches, unless `whole`."""
    path = Path(source)
    if not probe.has_audio:
        seconds = (clip[1] - clip[0]) if clip is not None else probe.duration
        samples = min(math.ceil(seconds), MAX_AUDIO_SECONDS) * SAMPLE_RATE
        return fit_audio(np.zeros(samples, dtype=np.float32))
    lag = _he_aac_lag(probe)
    if mode == "mp3" and not whole:
        export, samples = _lengths(probe, clip)
        starts = _snippet_starts(samples, lag)
        if starts is not None:
            stretches = _stretches(starts, export)
            if len(stretches) > 1:  # else nothing is skipped: the whole track
                snippets = _decode_snippets(path, clip, export, starts, stretches, timeout_s)
                return fit_audio(snippets)
    audio = _decode_pcm(path, probe, mode=mode, clip=clip, timeout_s=timeout_s)
    if lag:
        audio = np.concatenate([np.zeros(lag, dtype=np.float32), audio[: len(audio) - lag]])
    return fit_audio(audio)


__all__ = [
    "AUDIO_MODES",
    "EXPORT_RATE",
    "HE_AAC_LAG_S",
    "MP3_DELAY_SAMPLES",
    "TO_MONO",
    "export_samples",
    "fit_audio",
    "load_audio",
]
