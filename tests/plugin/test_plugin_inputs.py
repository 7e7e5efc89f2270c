"""What the model receives, through the plugin's real processor (no engine): every form of
a video item reaches the processor's outputs with its own audio, equal to what
`arc-prepare` gives; the processor cache keys the audio; every bad item is a ValueError
that says what is wrong, before anything reaches the model."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import serve_folder
from media_factory import ffmpeg
from prepared_containers import bad_containers, good_members, manifest, zip_of

from arc_media.pipeline import prepare_video
from arc_media.prepared import encode as encode_prepared
from arc_media.prepared import is_prepared
from vllm_plugin.features import pixel_values, whisper_features
from vllm_plugin.model import xd_positions
from vllm_plugin.processor import prepared_video_item

VIDEO = "w33698kgs05.mp4"  # 8 s, real speech


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    import vllm_plugin
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    vllm_plugin.register()
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")
    config = ModelConfig(
        model=str(checkpoint),
        max_model_len=20480,
        limit_mm_per_prompt={"video": 1},
        enable_mm_embeds=True,  # prepared tensors, as offline callers (arc-golden) use them
    )
    return MULTIMODAL_REGISTRY.create_processor(config)


def run(processor: Any, item: Any, cache: Any = None) -> dict[str, Any]:
    """The processor's outputs for one video item: what the engine gets."""
    # A prepared-tensor item is a dict of batched tensors; a video is a list entry.
    items = processor.info.parse_mm_data({"video": item if isinstance(item, dict) else [item]})
    out = processor("<vid>What is happening?<sep>", items, cache=cache)
    kwargs = out["mm_kwargs"]["video"][0]
    ids = list(out["prompt_token_ids"])
    config = processor.info.get_hf_config()
    return {
        "ids": ids,
        "positions": xd_positions(
            ids,
            im_start_id=config.text_config.im_start_id,
            im_end_id=config.text_config.im_end_id,
            tokens_per_frame=config.vision_config.tokens_per_frame,
            cells_per_row=config.vision_config.cells_per_row,
        ),
        "pixel_values": kwargs["pixel_values"].data,
        "input_features": kwargs["input_features"].data,
        "duration": int(kwargs["video_duration"].data),
        "hash": out["mm_hashes"]["video"][0],
    }


def video_io() -> Any:
    from vllm.multimodal.media.image import ImageMediaIO
    from vllm.multimodal.media.video import VideoMediaIO

    return VideoMediaIO(ImageMediaIO(), video_backend="arc")


@pytest.fixture(scope="module")
def reference(media_dir: Path) -> dict[str, Any]:
    """What `arc-prepare` gives for the video: frames, audio, duration, model tensors."""
    prepared = prepare_video(media_dir / VIDEO)
    features = torch.from_numpy(whisper_features(prepared.audio)).to(torch.bfloat16)
    return {
        "prepared": prepared,
        "pixel_values": pixel_values(prepared.frames),
        "input_features": features,
        "duration": prepared.duration,
    }


@pytest.fixture(scope="module")
def file_server(media_dir: Path) -> Iterator[str]:
    with serve_folder(media_dir) as url:
        yield url


def connector(media_dir: Path) -> Any:
    from vllm.multimodal.media.connector import MediaConnector

    return MediaConnector(
        media_io_kwargs={"video": {"video_backend": "arc"}},
        allowed_local_media_path=str(media_dir.resolve()),
    )


def assert_same_inputs(got: dict[str, Any], ref: dict[str, Any], *, exact_frames: bool) -> None:
    assert got["duration"] == ref["duration"]
    assert torch.equal(got["input_features"].float(), ref["input_features"].float()) or (
        not exact_frames
        and (got["input_features"].float() - ref["input_features"].float()).abs().mean() < 1e-3
    )
    if exact_frames:
        assert torch.equal(
            got["pixel_values"].view(torch.int16), ref["pixel_values"].view(torch.int16)
        )


# ---------------------------------------------------------------------------------------
# every item form carries its own audio


def test_every_item_form_gives_what_arc_prepare_gives(
    processor: Any, reference: dict[str, Any], media_dir: Path, file_server: str
) -> None:
    prepared = reference["prepared"]
    data = (media_dir / VIDEO).read_bytes()
    media = connector(media_dir)
    forms = {
        "offline (frames, metadata)": (
            prepared.frames,
            {"arc_audio": prepared.audio, "arc_duration": prepared.duration},
        ),
        "raw file bytes (arc loader)": video_io().load_bytes(data),
        "data URL": media.fetch_video("data:video/mp4;base64," + base64.b64encode(data).decode()),
        "file:// URL": media.fetch_video((media_dir / VIDEO).resolve().as_uri()),
        "http URL": media.fetch_video(f"{file_server}/{VIDEO}"),
        "prepared tensors": prepared_video_item(
            reference["pixel_values"], reference["input_features"], prepared.duration
        ),
    }
    results = {name: run(processor, item) for name, item in forms.items()}
    first = next(iter(results.values()))
    silence = torch.from_numpy(whisper_features(np.zeros(16000 * prepared.duration, np.float32)))
    for name, got in results.items():
        assert got["ids"] == first["ids"], name
        assert torch.equal(got["positions"], first["positions"]), name
        assert_same_inputs(got, reference, exact_frames=True)
        assert not torch.equal(got["input_features"].float(), silence.to(torch.bfloat16).float()), (
            f"{name}: the model would hear silence"
        )
    context = processor.info.get_hf_config().text_config.image_token_id
    assert first["ids"].count(context) == prepared.frames.shape[0] * 112


def test_gateway_container_gives_the_same_inputs_within_jpeg_tolerance(
    processor: Any, reference: dict[str, Any]
) -> None:
    prepared = reference["prepared"]
    container = encode_prepared(prepared.frames, prepared.audio, prepared.duration)
    frames, metadata = video_io().load_bytes(container).media
    # JPEG q97 4:4:4: within 1/255 on average per frame (documented in arc_media/prepared.py).
    diff = np.abs(frames.astype(np.int16) - prepared.frames.astype(np.int16))
    assert diff.reshape(len(frames), -1).mean(axis=1).max() < 1.0
    got = run(processor, video_io().load_bytes(container))
    assert got["duration"] == reference["duration"]
    delta = (got["input_features"].float() - reference["input_features"].float()).abs()
    assert delta.mean() < 1e-3  # 16-bit FLAC, then bf16
    assert metadata["arc_duration"] == prepared.duration


@pytest.fixture(scope="module")
def soundtracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The same pictures with a tone, with noise, and with no audio track."""
    folder = tmp_path_factory.mktemp("soundtracks")
    picture = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=4"]
    codec = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    sounds = {
        "tone": "sine=frequency=440:sample_rate=16000:duration=4",
        "noise": "anoisesrc=color=white:sample_rate=16000:duration=4:seed=7",
    }
    out = {}
    for name, source in sounds.items():
        path = folder / f"{name}.mp4"
        ffmpeg(*picture, "-f", "lavfi", "-i", source, *codec, "-c:a", "aac", "-shortest", str(path))
        out[name] = path.read_bytes()
    silent = folder / "silent.mp4"
    ffmpeg(*picture, *codec, "-an", str(silent))
    out["none"] = silent.read_bytes()
    return out


def test_the_same_pictures_with_another_soundtrack_are_another_input(
    processor: Any, soundtracks: dict[str, bytes]
) -> None:
    from vllm.multimodal.cache import MultiModalProcessorOnlyCache

    cache = MultiModalProcessorOnlyCache(processor.info.ctx.model_config)
    got = {
        name: run(processor, video_io().load_bytes(data), cache)
        for name, data in soundtracks.items()
    }
    assert torch.equal(got["tone"]["pixel_values"], got["noise"]["pixel_values"])
    assert len({g["hash"] for g in got.values()}) == 3  # the cache key covers the audio
    features = {name: g["input_features"].float() for name, g in got.items()}
    assert not torch.equal(features["tone"], features["noise"])
    assert not torch.equal(features["tone"], features["none"])
    assert (features["none"] == -1.5).all()  # no track: silence (docs/preprocessing.md#waveform)


def test_a_client_uuid_never_stands_for_the_content(
    processor: Any, soundtracks: dict[str, bytes]
) -> None:
    """vLLM would key an item by a client's uuid: the same uuid with another soundtrack
    would get the first one's cached inputs, and a uuid alone another client's video."""
    from vllm.multimodal.cache import MultiModalProcessorOnlyCache

    cache = MultiModalProcessorOnlyCache(processor.info.ctx.model_config)

    def under_uuid(item: Any) -> Any:
        items = processor.info.parse_mm_data({"video": [item]})
        return processor("<vid>Hi<sep>", items, {"video": ["shared-key"]}, cache=cache)

    tone = under_uuid(video_io().load_bytes(soundtracks["tone"]))
    noise = under_uuid(video_io().load_bytes(soundtracks["noise"]))
    assert tone["mm_hashes"] != noise["mm_hashes"]
    features = [out["mm_kwargs"]["video"][0]["input_features"].data for out in (tone, noise)]
    assert not torch.equal(*features)
    with pytest.raises(ValueError, match="must carry its data"):
        under_uuid(None)


def test_processor_cache_gives_the_same_outputs(
    processor: Any, soundtracks: dict[str, bytes]
) -> None:
    """vLLM's processing-correctness check: cached (miss, then hit) == uncached."""
    from vllm.multimodal.cache import MultiModalProcessorOnlyCache

    cache = MultiModalProcessorOnlyCache(processor.info.ctx.model_config)
    for name in ("tone", "noise", "tone", "noise"):
        cached = run(processor, video_io().load_bytes(soundtracks[name]), cache)
        fresh = run(processor, video_io().load_bytes(soundtracks[name]))
        assert cached["ids"] == fresh["ids"]
        assert cached["hash"] == fresh["hash"]
        for key in ("pixel_values", "input_features"):
            assert torch.equal(cached[key], fresh[key]), (name, key)


def test_profiling_dummy_is_the_largest_accepted_video(processor: Any) -> None:
    """Whatever sequence length the profiler passes (chunked prefill passes a smaller one),
    the dummy video is 150 frames with 300 s of audio, as large as the engine accepts."""
    for seq_len in (2048, 8192, 20480):
        item = processor.dummy_inputs.get_dummy_mm_data(seq_len, {"video": 1})["video"]
        assert tuple(item["pixel_values"].shape) == (150, 3, 640, 640)
        assert tuple(item["input_features"].shape) == (10, 128, 3000)
        assert int(item["video_duration"]) == 300
    tokens = processor.info.get_mm_max_tokens_per_item(2048, {"video": 1})["video"]
    assert tokens == 150 * 114 + 2


# ---------------------------------------------------------------------------------------
# the processor is a trust boundary


def frames(count: int, size: int = 640) -> np.ndarray:
    return np.broadcast_to(np.uint8(90), (count, size, size, 3))


def audio(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), np.float32) + 0.01


BAD_ITEMS: dict[str, tuple[Any, str]] = {
    "64x64 frames": ((frames(2, 64), {}), "640, 640, 3"),
    "float frames": ((np.zeros((2, 640, 640, 3), np.float32), {}), "uint8"),
    "frames without channels": ((np.zeros((2, 640, 640), np.uint8), {}), "uint8"),
    "zero frames": ((frames(0), {}), "1 to 150 frames"),
    "151 frames": ((frames(151), {}), "1 to 150 frames"),
    "duration 10 for 2 frames": ((frames(2), {"arc_audio": audio(10), "arc_duration": 10}), "2 s"),
    "duration 0": ((frames(2), {"arc_audio": audio(2), "arc_duration": 0}), "duration"),
    "duration 301 for 150 frames": (
        (frames(150), {"arc_audio": audio(300), "arc_duration": 301}),
        "150 to 300",
    ),
    "fractional duration": ((frames(2), {"arc_audio": audio(2), "arc_duration": 2.5}), "whole"),
    "audio shorter than the duration": (
        (frames(4), {"arc_audio": audio(2), "arc_duration": 4}),
        "shorter",
    ),
    "audio over 300 s": ((frames(2), {"arc_audio": audio(301), "arc_duration": 2}), "300 s"),
    "stereo audio": ((frames(2), {"arc_audio": np.zeros((32000, 2), np.float32)}), "1-D"),
    "NaN audio": ((frames(2), {"arc_audio": np.full(32000, np.nan, np.float32)}), "finite"),
    "audio of 1e30 (overflows the features)": (
        (frames(2), {"arc_audio": np.full(32000, 1e30, np.float32)}),
        "finite",
    ),
    "features of 1e30": (
        (frames(2), {"arc_audio_features": np.full((1, 128, 3000), 1e30, np.float32)}),
        "finite",
    ),
    "prepared NaN pixels": (
        prepared_video_item(
            torch.full((2, 3, 640, 640), float("nan")), torch.zeros(1, 128, 3000), 2
        ),
        "pixel_values must be finite",
    ),
    "prepared infinite features": (
        prepared_video_item(
            torch.zeros(2, 3, 640, 640), torch.full((1, 128, 3000), float("inf")), 2
        ),
        "input_features must be finite",
    ),
    "features of the wrong shape": (
        (frames(2), {"arc_audio_features": np.zeros((1, 80, 3000), np.float32)}),
        "128, 3000",
    ),
    "features too short for the duration": (
        (
            frames(150),
            {"arc_audio_features": np.zeros((2, 128, 3000), np.float32), "arc_duration": 200},
        ),
        "cannot cover",
    ),
    "frames read by opencv": ((frames(2), {"video_backend": "opencv"}), "opencv"),
    "a dict that is not a prepared item": ({"frames": frames(2)}, "prepared item"),
    "prepared pixels of the wrong size": (
        prepared_video_item(torch.zeros(2, 3, 64, 64), torch.zeros(1, 128, 3000), 2),
        "640, 640",
    ),
    "prepared duration out of range": (
        prepared_video_item(torch.zeros(2, 3, 640, 640), torch.zeros(1, 128, 3000), 10),
        "2 s",
    ),
    "prepared counts that lie": (
        {
            **prepared_video_item(torch.zeros(2, 3, 640, 640), torch.zeros(1, 128, 3000), 2),
            "video_num_frames": torch.tensor([5]),
        },
        "video_num_frames",
    ),
}


@pytest.mark.parametrize("name", list(BAD_ITEMS))
def test_bad_items_are_refused_with_a_reason(processor: Any, name: str) -> None:
    item, reason = BAD_ITEMS[name]
    with pytest.raises(ValueError, match=reason):
        run(processor, item)


def test_jpeg_frame_list_is_refused_with_a_hint(processor: Any) -> None:
    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, "JPEG")
    frame = base64.b64encode(jpeg.getvalue()).decode()
    item = video_io().load_base64("video/jpeg", f"{frame},{frame}")
    with pytest.raises(ValueError, match="send the video file"):
        run(processor, item)


# ---------------------------------------------------------------------------------------
# the gateway's container, read by the engine


def test_bad_containers_are_refused_before_memory_grows(processor: Any) -> None:
    import tracemalloc

    for name, (data, reason) in bad_containers().items():
        assert is_prepared(data) or name == "truncated", name
        tracemalloc.start()
        with pytest.raises(ValueError, match=reason):
            video_io().load_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 100 << 20, f"{name}: {peak / 2**20:.0f} MB"


def test_container_duration_that_does_not_fit_is_refused(processor: Any) -> None:
    data = zip_of({**good_members(), "arc-prepared.json": manifest(duration=10)})
    with pytest.raises(ValueError, match="2 s"):
        run(processor, video_io().load_bytes(data))
    assert run(processor, video_io().load_bytes(zip_of(good_members())))["duration"] == 2


def test_tensor_schema_accepts_what_the_processor_gives(
    processor: Any, reference: dict[str, Any]
) -> None:
    """vLLM's tensor-schema check: the processor's outputs (the profiling dummy and a real
    video) fit the model's typed inputs, and a mismatched shape is named."""
    from vllm.multimodal.utils import group_and_batch_mm_kwargs

    from vllm_plugin.model import ARCVideoInputs

    prepared = reference["prepared"]
    real = (prepared.frames, {"arc_audio": prepared.audio, "arc_duration": prepared.duration})
    dummy = processor.get_dummy_mm_inputs({"video": 1})["mm_kwargs"]["video"][0]
    items = [
        dummy,
        processor("<vid>", processor.info.parse_mm_data({"video": [real]}))["mm_kwargs"]["video"][
            0
        ],
    ]
    # Batched as the model runner batches an encoder step.
    (_, _, batch), *_ = group_and_batch_mm_kwargs([("video", item) for item in items])
    inputs = ARCVideoInputs(**batch, resolve_bindings={"s": 640})
    assert inputs.pixel_values.shape[0] == 150 + prepared.frames.shape[0]
    with pytest.raises(ValueError, match="input_features"):
        ARCVideoInputs(**{**batch, "input_features": batch["input_features"][:, :80]},
                       resolve_bindings={"s": 640})  # fmt: skip


# ---------------------------------------------------------------------------------------
# the gateway's forward forms, as the engine reads them


@pytest.mark.parametrize("name", ["w33698kgs05.mp4", "c3522vbgwaw.mp4"])
def test_shared_forward_gives_what_the_plugin_makes_of_the_file(
    processor: Any, media_dir: Path, tmp_path: Path, name: str
) -> None:
    """`--forward-mode shared`: the decode worker's raw container, read by vLLM from a
    file:// URL in the allowed folder, gives the processor the same outputs as the original
    file sent to the `arc` loader: pixels bit-exact, features equal (within 1e-4 allowed),
    the same ids and positions. The JPEG/FLAC container's distance is printed beside it."""
    from servers import prepare_container
    from vllm.multimodal.media.connector import MediaConnector

    path = media_dir / name
    direct = run(processor, video_io().load_bytes(path.read_bytes()))
    media = MediaConnector(
        media_io_kwargs={"video": {"video_backend": "arc"}},
        allowed_local_media_path=str(tmp_path.resolve()),
    )
    got = {}
    for encoding in ("raw", "jpeg-flac"):
        forwarded = tmp_path / f"{encoding}.arcz"
        prepare_container(path, forwarded, encoding)
        got[encoding] = run(processor, media.fetch_video(forwarded.resolve().as_uri()))
    for encoding, result in got.items():
        pixels = (result["pixel_values"].float() - direct["pixel_values"].float()).abs()
        features = (result["input_features"].float() - direct["input_features"].float()).abs()
        print(
            f"{name} {encoding}: pixel_values max {pixels.max():.4f} mean {pixels.mean():.2e}, "
            f"features max {features.max():.2e} mean {features.mean():.2e}"
        )
    shared = got["raw"]
    assert shared["ids"] == direct["ids"]
    assert torch.equal(shared["positions"], direct["positions"])
    assert shared["duration"] == direct["duration"]
    assert torch.equal(
        shared["pixel_values"].view(torch.int16), direct["pixel_values"].view(torch.int16)
    )
    delta = (shared["input_features"].float() - direct["input_features"].float()).abs()
    assert delta.max() <= 1e-4, delta.max()
    assert shared["hash"] != got["jpeg-flac"]["hash"]  # another item: its pixels differ
