"""`arc-ask`: one video file and a question in, the model's answer out.

Runs the whole path in one process: the project's preprocessing (ffmpeg frames with the
timestamp overlay, the video's own 16 kHz audio), the vLLM engine with the plugin, the
authors' prompt for the chosen task. With no `--model` it builds the embedded tiny
random-weight checkpoint (answers are noise, the plumbing is real) so it runs anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_TINY_DIR = Path(os.environ.get("ARC_TINY_DIR", Path.home() / ".cache/arc-video-serve/tiny"))


def log(message: str) -> None:
    print(f"[arc-ask] {message}", file=sys.stderr, flush=True)


def ensure_tiny_checkpoint(path: Path) -> Path:
    if (path / "config.json").exists():
        return path
    from .tiny_checkpoint import write_tiny_checkpoint

    log(f"writing the tiny random-weight checkpoint to {path}")
    return write_tiny_checkpoint(path)


def prompt_ids(tokenizer, question: str | None, task: str) -> list[int]:
    from .processor import ARCProcessingInfo
    from .prompts import user_text

    start = tokenizer.convert_tokens_to_ids("<|startoftext|>")
    text = ARCProcessingInfo.VIDEO_PLACEHOLDER + user_text(question, task) + "<sep>"
    return [start] + tokenizer.encode(text, add_special_tokens=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arc-ask",
        description="Answer a question about a video with ARC-Hunyuan-Video in vLLM. "
        "Without --model, uses a tiny random-weight checkpoint (plumbing check: the "
        "answer is noise).",
    )
    parser.add_argument("video", help="video file (mp4, webm, mov, ...)")
    parser.add_argument("question", nargs="?", help="question (optional for summary/chapters)")
    parser.add_argument("--task", default="qa", help="qa, summary, grounding, mcq or chapters")
    parser.add_argument("--model", help="checkpoint directory (default: the tiny checkpoint)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto", help="auto, bfloat16 or float32")
    parser.add_argument(
        "--font", help="TTF font for the timestamp overlay (default Liberation Sans)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the answer readable
    from . import preprocess, register

    register()
    model = Path(args.model) if args.model else ensure_tiny_checkpoint(DEFAULT_TINY_DIR)

    t0 = time.perf_counter()
    video = preprocess.prepare_video(args.video, font_path=args.font)
    log(
        f"prepared {Path(args.video).name}: {video.frames.shape[0]} frames, "
        f"{video.duration} s of audio, {time.perf_counter() - t0:.2f} s"
    )

    from vllm import LLM, SamplingParams

    log(f"starting the vLLM engine on {model}")
    llm = LLM(
        model=str(model),
        dtype=args.dtype,
        max_model_len=20480,
        gpu_memory_utilization=float(os.environ.get("ARC_GPU_MEMORY_UTILIZATION", "0.2")),
        limit_mm_per_prompt={"video": 1},
    )
    ids = prompt_ids(llm.get_tokenizer(), args.question, args.task)
    metadata = {"arc_audio": video.audio, "arc_duration": video.duration}
    output = llm.generate(
        {"prompt_token_ids": ids, "multi_modal_data": {"video": (video.frames, metadata)}},
        SamplingParams(temperature=0.0, max_tokens=args.max_tokens),
        use_tqdm=False,
    )[0]
    log(
        f"prompt tokens: {len(output.prompt_token_ids)}, generated: {len(output.outputs[0].token_ids)}"
    )
    print(output.outputs[0].text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
