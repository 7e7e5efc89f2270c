"""`arc-ask`: one video file and a question in, the model's answer out.

Runs the whole path in one process: the project's preprocessing (frames with the
timestamp overlay, the video's own 16 kHz audio), the vLLM engine with the plugin, the
authors' prompt for the chosen task. With no `--model` it builds the embedded tiny
random-weight checkpoint (answers are noise, the plumbing is real) so it runs anywhere.

On a CPU build of vLLM the engine runs eagerly, in this process, with a KV cache sized for
one request (vllm_plugin/engine_args.py): no warm-up pass, no engine processes to start.
Engine logs go to a file unless `--verbose`; the file is shown when something fails.

Every argument is checked before anything heavy is imported (torch, vLLM): a wrong one is
one line on stderr and exit status 2, at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .. import engine_args
from ..embedded_tiny import DEFAULT_TINY_DIR, ensure_tiny_checkpoint
from ..prompts import DEFAULT_QUESTIONS, TASKS, prompt_ids

MAX_MODEL_LEN = 20480  # the authors' serving length: 150 frames take 17,100 tokens
# vLLM's --dtype choices.
DTYPES = ("auto", "bfloat16", "float16", "half", "float32", "float")

_started = time.perf_counter()
# Progress lines go to the terminal's stderr even while the engine's output is redirected.
_console: TextIO = sys.stderr


def log(message: str) -> None:
    print(f"[arc-ask {time.perf_counter() - _started:5.1f} s] {message}", file=_console, flush=True)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """File descriptors 1 and 2 (this process and the processes it starts: vLLM's,
    transformers', torch's C++ and oneDNN's messages) go to `path` for the duration."""
    global _console
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _console = open(os.dup(2), "w")  # noqa: SIM115 (closed below)
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _console.close()
        _console = sys.stderr


def quiet_environment() -> None:
    """Fewer messages from the libraries (the rest goes to the log file)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def engine_options(args: argparse.Namespace, model: Path) -> tuple[dict[str, Any], str]:
    """The LLM options for this machine, after checking that the memory is there."""
    if not engine_args.cpu_build():
        return {}, "GPU"
    kv_bytes = engine_args.kv_cache_bytes(
        args.kv_cache_memory_bytes,
        engine_args.kv_cache_bytes_for(model, MAX_MODEL_LEN, 1, args.dtype),
    )
    engine = engine_args.CpuEngine(model, kv_bytes, MAX_MODEL_LEN, args.dtype, "arc-ask")
    engine.check_memory()
    # One process: the engine core and its worker run in this one instead of starting
    # two more (each importing torch and vLLM again: 10-20 s on two cores).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    options = {"enforce_eager": True, "kv_cache_memory_bytes": kv_bytes}
    return options, f"CPU, eager, KV cache {engine_args.size(kv_bytes)}"


def register_model_class() -> None:
    """The plugin, with the model class itself instead of its module's name: vLLM then
    reads the class's capabilities in this process (which loads the class anyway) instead
    of in a child process importing torch and vLLM again, 7-10 s on two cores whenever
    ~/.cache/vllm has no record of this model.py (a new machine, a changed file)."""
    from vllm import ModelRegistry

    from .. import ARCHITECTURE, register
    from ..model import ARCHunyuanVideoForConditionalGeneration

    ModelRegistry.register_model(ARCHITECTURE, ARCHunyuanVideoForConditionalGeneration)
    register()  # the config class and the video loader; the model is registered now


def answer(args: argparse.Namespace, model: Path) -> tuple[str, int, int]:
    options, where = engine_options(args, model)
    # The video first (no torch or vLLM needed): a file that is no video fails in a second.
    from arc_media.limits import MediaError
    from arc_media.pipeline import prepare_video

    t0 = time.perf_counter()
    try:
        video = prepare_video(args.video, font_path=args.font)
    except MediaError as error:
        raise SystemExit(f"arc-ask: {args.video}: {error}") from None
    log(
        f"video prepared: {video.frames.shape[0]} frames, {video.duration} s of audio "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    log("loading vLLM and the model code")
    register_model_class()
    from vllm import LLM, SamplingParams

    log(f"starting the vLLM engine ({where}) on {model}")
    llm = LLM(
        model=str(model),
        dtype=args.dtype,
        max_model_len=MAX_MODEL_LEN,
        limit_mm_per_prompt={"video": 1},
        **options,
    )
    log("answering")
    ids = prompt_ids(llm.get_tokenizer(), args.question, args.task)
    metadata = {"arc_audio": video.audio, "arc_duration": video.duration}
    output = llm.generate(
        {"prompt_token_ids": ids, "multi_modal_data": {"video": (video.frames, metadata)}},
        SamplingParams(temperature=0.0, max_tokens=args.max_tokens),
        use_tqdm=False,
    )[0]
    return output.outputs[0].text, len(output.prompt_token_ids), len(output.outputs[0].token_ids)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """One line, not argparse's usage block: what is wrong and where to look."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _max_tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_MODEL_LEN:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 1 to {MAX_MODEL_LEN}"
        )
    return value


def _byte_count(text: str) -> str:
    try:
        if engine_args.parse_bytes(text) <= 0:
            raise ValueError(f"{text!r} is not a positive size")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _task(text: str) -> str:
    if text.lower() not in TASKS:
        raise argparse.ArgumentTypeError(f"unknown task {text!r}; choose one of {', '.join(TASKS)}")
    return text.lower()


def _readable_file(path: str, what: str) -> str | None:
    """Why `path` cannot be read as a file, or None."""
    file = Path(path)
    if not file.exists():
        return f"no such {what}: {path}"
    if not file.is_file():
        return f"{what} {path} is not a file"
    try:
        with file.open("rb") as handle:
            empty = not handle.read(1)
    except OSError as error:
        return f"{what} {path} cannot be read: {error.strerror or error}"
    return f"{what} {path} is empty" if empty else None


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse's types cannot see alone; exits with one line at the first problem."""
    if args.task not in DEFAULT_QUESTIONS and not (args.question or "").strip():
        parser.error(
            f'task {args.task} needs a question: arc-ask VIDEO "QUESTION" --task {args.task} '
            f"(only {' and '.join(DEFAULT_QUESTIONS)} have a default question)"
        )
    problem = _readable_file(args.video, "video file")
    if problem is None and args.font:
        problem = _readable_file(args.font, "font file")
    if problem:
        parser.error(problem)
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: not a checkpoint directory (no config.json there)")
    if args.kv_cache_memory_bytes is None and os.environ.get(engine_args.KV_CACHE_ENV):
        try:
            _byte_count(os.environ[engine_args.KV_CACHE_ENV])
        except argparse.ArgumentTypeError as error:
            parser.error(f"${engine_args.KV_CACHE_ENV}: {error}")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="arc-ask",
        description="Answer a question about a video with ARC-Hunyuan-Video in vLLM. "
        "Without --model, uses a tiny random-weight checkpoint (plumbing check: the "
        "answer is noise). Answers are greedy (the authors' generation).",
    )
    parser.add_argument("video", help="video file (mp4, webm, mov, ...)")
    parser.add_argument(
        "question",
        nargs="?",
        help=f"question (optional for {' and '.join(DEFAULT_QUESTIONS)}: the authors' own)",
    )
    parser.add_argument("--task", default="qa", type=_task, help=", ".join(TASKS) + " (default qa)")
    parser.add_argument(
        "--model", help=f"checkpoint directory (default: the tiny checkpoint in {DEFAULT_TINY_DIR})"
    )
    parser.add_argument(
        "--max-tokens",
        type=_max_tokens,
        default=64,
        metavar="N",
        help="most tokens to generate (default 64)",
    )
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="default auto")
    parser.add_argument(
        "--font", help="TTF font for the timestamp overlay (default Liberation Sans)"
    )
    parser.add_argument(
        "--kv-cache-memory-bytes",
        metavar="BYTES",
        type=_byte_count,
        help="KV cache of the CPU engine, e.g. 512M or 2G (default: $ARC_KV_CACHE_MEMORY_BYTES, "
        f"else what one request of {MAX_MODEL_LEN} tokens needs)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the engine's logs (vLLM, transformers, torch)"
    )
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if engine_args.cpu_build():
        # Before torch is imported: it reads TORCH_COMPILE_DISABLE once, at import.
        engine_args.set_cpu_environment()
    if args.model:
        model = Path(args.model)
    else:
        model = ensure_tiny_checkpoint(DEFAULT_TINY_DIR, say=log)
        log("the embedded tiny model has random weights: its answer is noise (use --model)")
    # A folder of this run's own for the engine's log and temporary files (vLLM's
    # rendezvous file among them), removed at the end.
    workdir = Path(tempfile.mkdtemp(prefix="arc-ask-"))
    tempfile.tempdir = str(workdir)
    engine_log = workdir / "engine.log"
    try:
        if args.verbose:
            text, prompt_tokens, generated = answer(args, model)
        else:
            quiet_environment()
            with output_to(engine_log):
                text, prompt_tokens, generated = answer(args, model)
    except SystemExit:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    except Exception:
        if engine_log.exists():
            lines = engine_log.read_text(errors="replace").splitlines()
            print("\n".join(lines[-15:]), file=sys.stderr)
            log(f"failed; the engine's log is {engine_log} (or run with --verbose)")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"answer ({prompt_tokens} prompt tokens, {generated} generated):")
    print(text, flush=True)
    if argv is None:
        # The console command: nothing is left to do, and the interpreter's teardown
        # of torch and the engine would take another 3-4 s.
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
