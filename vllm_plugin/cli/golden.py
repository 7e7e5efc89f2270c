"""`arc-golden`: check the plugin inside the vLLM engine against the authors' outputs.

A fixture folder (the format of ../shared/golden/model/tiny-a) holds `checkpoint/`,
`cases/<video>/path_{a,b}/` and `index.json`; the prepared inputs (frames, audio
features, prompt templates) live in `--inputs` (default `DIR/../inputs`). For every
case and both token layouts this feeds the prepared inputs to the engine, decodes 16
greedy tokens with log-probabilities, and applies the acceptance rule of the fixtures'
README: input ids and 4-axis position ids exact; in float32, greedy tokens exact and
first-step / teacher-forced log-probabilities within 1e-4; in bfloat16, log-probabilities
within 0.3 (twice the 0.15 logit bound: a log-probability moves with its logit and the
log-sum-exp) and teacher-forced argmax agreeing on >= 12 of 16 steps with no flip where
the float32 margin is >= 0.3.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch  # imported in main() after the CPU engine's environment is set

LAYOUT_DIRS = {"A": "path_a", "B": "path_b"}
GREEDY_STEPS = 16
TOP_K = 5
FP32_TOL = 1e-4
BF16_LOGPROB_TOL = 0.3
BF16_MIN_AGREE = 12
BF16_SAFE_MARGIN = 0.3


@dataclass
class CaseResult:
    case: str
    path: str
    greedy_ids: list[int]
    top5: list[list[float]]
    input_ids_equal: bool
    position_ids_equal: bool
    greedy_equal: bool
    first_step_max_abs: float
    teacher_forced_max_abs: float
    teacher_forced_agree: int
    passed: bool = False
    problems: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["pass"] = out.pop("passed")
        return out


def load_pixel_values(frames_dir: Path, num_frames: int) -> torch.Tensor:
    from PIL import Image

    from ..features import pixel_values

    frames = [
        np.asarray(Image.open(frames_dir / f"frame_{i:03d}.png").convert("RGB"))
        for i in range(num_frames)
    ]
    return pixel_values(np.stack(frames))


def bf16_sha256(tensor: torch.Tensor) -> str:
    import torch

    raw = tensor.contiguous().view(torch.uint16).numpy().tobytes()
    return hashlib.sha256(raw).hexdigest()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class Case:
    """One clip's prepared inputs and reference outputs."""

    def __init__(self, name: str, fixtures: Path, inputs: Path) -> None:
        self.name = name
        self.case_dir = fixtures / "cases" / name
        self.input_dir = inputs / name
        self.meta = json.loads((self.input_dir / "inputs.json").read_text())

    def model_inputs(self) -> tuple[torch.Tensor, torch.Tensor, int, list[str]]:
        import torch

        problems = []
        n = int(self.meta["num_frames"])
        pixels = load_pixel_values(self.input_dir, n)
        expected = self.meta.get("pixel_values_sha256_bf16_per_frame")
        if isinstance(expected, str):
            expected = json.loads(expected.replace("'", '"'))
        if expected and [bf16_sha256(p) for p in pixels] != list(expected):
            problems.append("pixel_values differ from the fixture's sha256")
        features = np.load(self.input_dir / "audio_features.npz")["audio_features"]
        features_bf16 = torch.from_numpy(np.ascontiguousarray(features)).to(torch.bfloat16)
        expected_audio = self.meta.get("audio_features_sha256_bf16")
        if expected_audio and bf16_sha256(features_bf16) != expected_audio:
            problems.append("input_features differ from the fixture's sha256")
        return pixels, features_bf16, int(self.meta["duration"]), problems

    def prompt_ids(self, tokenizer: Any, layout: str, placeholder: str) -> list[int]:
        n = int(self.meta["num_frames"])
        if layout == "A":
            text = self.meta["prompt_path_a_before_bos"].replace("<image>" * n, placeholder, 1)
            start = tokenizer.convert_tokens_to_ids("<|startoftext|>")
            return [start] + tokenizer.encode(text, add_special_tokens=False)
        text = self.meta["prompt_path_b_before_expansion"].replace("<image>" * n, placeholder, 1)
        return tokenizer.encode(text, add_special_tokens=False)

    def reference(self, layout: str) -> dict[str, Any]:
        d = self.case_dir / LAYOUT_DIRS[layout]
        return {
            "input_ids": np.load(d / "input_ids.npy").tolist(),
            "position_ids": np.load(d / "position_ids.npy"),
            "logits_last_prompt": np.load(d / "logits_last_prompt.npy"),
            "step_logits": np.load(d / "step_logits.npy"),
            "greedy_ids": json.loads((d / "result.json").read_text())["greedy_ids"],
        }


def build_engine(
    checkpoint: Path, dtype: str, tp: int, max_model_len: int, sequences: int, kv: str | None
) -> Any:
    """The engine for `sequences` requests of up to `max_model_len` tokens, all batched.

    On a CPU build: eager, with a KV cache of their size (`kv` or $ARC_KV_CACHE_MEMORY_BYTES
    to override), the engine core in this process (and the model too when tp == 1)."""
    from .. import engine_args

    options: dict[str, Any] = {}
    if engine_args.cpu_build():
        need = engine_args.kv_cache_bytes_for(checkpoint, max_model_len, sequences, dtype, tp)
        kv_bytes = engine_args.kv_cache_bytes(kv, need)
        engine = engine_args.CpuEngine(checkpoint, kv_bytes, max_model_len, dtype, "arc-golden")
        # This process (engine core, and the model when tp == 1), then one per worker.
        engine.workers, engine.processes = tp, 1 if tp == 1 else 1 + tp
        engine.check_memory()
        # The engine core in this process (one process fewer to start, each importing
        # torch and vLLM); with tp > 1 the workers are still processes of their own.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        engine_args.bind_worker_threads(tp)
        options = {"enforce_eager": True, "kv_cache_memory_bytes": kv_bytes}
    from vllm import LLM

    return LLM(
        model=str(checkpoint),
        dtype=dtype,
        tensor_parallel_size=tp,
        max_model_len=max_model_len,
        limit_mm_per_prompt={"video": 1},
        enable_prefix_caching=False,
        mm_processor_cache_gb=0,
        # Prepared tensors (DictEmbeddingItems) count as "embeddings" to vLLM.
        enable_mm_embeds=True,
        max_logprobs=TOP_K,
        seed=0,
        **options,
    )


def run(args: argparse.Namespace) -> list[CaseResult]:
    from vllm import SamplingParams

    from ..processor import ARCProcessingInfo, prepared_video_item

    fixtures = Path(args.fixtures)
    inputs = Path(args.inputs) if args.inputs else fixtures.parent / "inputs"
    if not (fixtures / "index.json").is_file():
        raise SystemExit(f"arc-golden: {fixtures} is not a fixture folder (no index.json)")
    names = sorted(d.name for d in (fixtures / "cases").iterdir() if d.is_dir())
    if args.case:
        names = [n for n in names if n in args.case]
    cases = [Case(n, fixtures, inputs) for n in names]
    longest = max(len(c.reference(layout)["input_ids"]) for c in cases for layout in "AB")
    # Two requests per case and layout (free decoding, teacher forcing).
    llm = build_engine(
        fixtures / "checkpoint",
        args.dtype,
        args.tensor_parallel_size,
        longest + 64,
        2 * len(cases) * len(args.paths),
        args.kv_cache_memory_bytes,
    )
    tokenizer = llm.get_tokenizer()
    config = llm.llm_engine.model_config.hf_config
    text = config.text_config

    requests, keys, refs, prep_problems = [], [], [], {}
    for case in cases:
        pixels, features, duration, problems = case.model_inputs()
        prep_problems[case.name] = problems
        item = prepared_video_item(pixels, features, duration)
        for layout in args.paths:
            ref = case.reference(layout)
            ids = case.prompt_ids(tokenizer, layout, ARCProcessingInfo.VIDEO_PLACEHOLDER)
            mm = {"video": item}
            kwargs = {"arc_layout": layout}
            requests.append(
                (
                    {
                        "prompt_token_ids": ids,
                        "multi_modal_data": mm,
                        "mm_processor_kwargs": kwargs,
                    },
                    SamplingParams(
                        temperature=0.0,
                        max_tokens=GREEDY_STEPS,
                        logprobs=TOP_K,
                        ignore_eos=True,
                        detokenize=False,
                    ),
                )
            )
            # Teacher forcing: the reference greedy tokens appended to the prompt.
            requests.append(
                (
                    {
                        "prompt_token_ids": ids + ref["greedy_ids"],
                        "multi_modal_data": mm,
                        "mm_processor_kwargs": kwargs,
                    },
                    SamplingParams(
                        temperature=0.0, max_tokens=1, prompt_logprobs=TOP_K, detokenize=False
                    ),
                )
            )
            keys.append((case.name, layout))
            refs.append(ref)

    outputs = llm.generate(
        [r[0] for r in requests], [r[1] for r in requests], use_tqdm=not args.quiet
    )
    results = []
    for i, ((name, layout), ref) in enumerate(zip(keys, refs)):
        free, forced = outputs[2 * i], outputs[2 * i + 1]
        results.append(
            judge(name, layout, ref, free, forced, args.dtype, text, config, prep_problems[name])
        )
    return results


def judge(name, layout, ref, free, forced, dtype, text, config, problems) -> CaseResult:
    from ..model import xd_positions

    prompt_ids = list(free.prompt_token_ids)
    positions = xd_positions(
        prompt_ids,
        im_start_id=text.im_start_id,
        im_end_id=text.im_end_id,
        tokens_per_frame=config.vision_config.tokens_per_frame,
        cells_per_row=config.vision_config.cells_per_row,
    ).numpy()
    input_equal = prompt_ids == ref["input_ids"]
    position_equal = input_equal and np.array_equal(positions, ref["position_ids"])
    completion = free.outputs[0]
    greedy = list(completion.token_ids)
    first = completion.logprobs[0]
    top5 = sorted(((tid, lp.logprob) for tid, lp in first.items()), key=lambda t: -t[1])[:TOP_K]

    ref_lp = log_softmax(ref["logits_last_prompt"])
    first_diff = max(abs(lp.logprob - ref_lp[tid]) for tid, lp in first.items())
    # Teacher-forced: prompt_logprobs[L + k] is step k's distribution.
    length = len(ref["input_ids"])
    step_lp = log_softmax(ref["step_logits"])
    forced_diff, agree, flips = 0.0, 0, []
    for k in range(GREEDY_STEPS):
        dist = forced.prompt_logprobs[length + k]
        for tid, lp in dist.items():
            forced_diff = max(forced_diff, abs(lp.logprob - step_lp[k][tid]))
        best = max(dist.items(), key=lambda t: t[1].logprob)[0]
        if best == ref["greedy_ids"][k]:
            agree += 1
        else:
            top2 = np.sort(ref["step_logits"][k])[-2:]
            flips.append(float(top2[1] - top2[0]))

    result = CaseResult(
        case=name,
        path=layout,
        greedy_ids=greedy,
        top5=[[int(t), float(lp)] for t, lp in top5],
        input_ids_equal=input_equal,
        position_ids_equal=position_equal,
        greedy_equal=greedy == ref["greedy_ids"],
        first_step_max_abs=float(first_diff),
        teacher_forced_max_abs=float(forced_diff),
        teacher_forced_agree=agree,
        problems=list(problems),
    )
    if not input_equal:
        result.problems.append("input ids differ")
    if not position_equal:
        result.problems.append("position ids differ")
    if dtype == "float32":
        if not result.greedy_equal:
            result.problems.append("greedy tokens differ")
        if first_diff > FP32_TOL:
            result.problems.append(f"first-step logprobs off by {first_diff:.2e} > {FP32_TOL}")
        if forced_diff > FP32_TOL:
            result.problems.append(f"teacher-forced logprobs off by {forced_diff:.2e}")
    else:
        if max(first_diff, forced_diff) > BF16_LOGPROB_TOL:
            result.problems.append(
                f"bf16 logprobs off by {max(first_diff, forced_diff):.3f} > {BF16_LOGPROB_TOL}"
            )
        if agree < BF16_MIN_AGREE:
            result.problems.append(f"teacher-forced argmax agrees on {agree}/16 < 12")
        if any(m >= BF16_SAFE_MARGIN for m in flips):
            result.problems.append("argmax flipped at a step with float32 margin >= 0.3")
    result.passed = not result.problems
    return result


def print_table(results: list[CaseResult], dtype: str, tp: int) -> None:
    print(f"\narc-golden  dtype={dtype}  tensor_parallel_size={tp}")
    header = f"{'case':<16}{'path':<6}{'ids':<5}{'pos':<5}{'greedy':<8}{'step0 Δ':>10}"
    header += f"{'forced Δ':>10}{'agree':>7}  result"
    print(header)
    print("-" * len(header))
    for r in results:
        mark = lambda ok: "ok" if ok else "NO"
        print(
            f"{r.case:<16}{r.path:<6}{mark(r.input_ids_equal):<5}{mark(r.position_ids_equal):<5}"
            f"{mark(r.greedy_equal):<8}{r.first_step_max_abs:>10.2e}"
            f"{r.teacher_forced_max_abs:>10.2e}{r.teacher_forced_agree:>5}/16  "
            + ("PASS" if r.passed else "FAIL: " + "; ".join(r.problems))
        )
    failed = sum(not r.passed for r in results)
    print(f"\n{len(results) - failed} passed, {failed} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="arc-golden",
        description="Run golden fixtures through the vLLM engine with the ARC plugin and "
        "check input ids, 4-axis positions, greedy tokens and log-probabilities against "
        "the authors' reference outputs. Exits non-zero if any case fails.",
    )
    parser.add_argument(
        "--fixtures", required=True, help="fixture folder: checkpoint/, cases/, index.json"
    )
    parser.add_argument("--inputs", help="prepared inputs folder (default: FIXTURES/../inputs)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--json", help="write one JSON record per case and path to this file")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--paths", default="AB", help="token layouts to run: A, B or AB")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--kv-cache-memory-bytes",
        metavar="BYTES",
        help="KV cache of the CPU engine (per worker), e.g. 256M (default: "
        "$ARC_KV_CACHE_MEMORY_BYTES, else what all requests need at once)",
    )
    args = parser.parse_args(argv)
    args.paths = [p for p in args.paths.upper() if p in LAYOUT_DIRS]

    from .. import engine_args

    if engine_args.cpu_build():
        # Before torch is imported: it reads TORCH_COMPILE_DISABLE once, at import.
        engine_args.set_cpu_environment()
    import torch

    from .. import register

    register()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = run(args)
    print_table(results, args.dtype, args.tensor_parallel_size)
    if args.json:
        Path(args.json).write_text(json.dumps([r.record() for r in results], indent=1))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
