"""One measured request of the load benchmark, with the gateway's Server-Timing stages, and
the SLOs a request meets or not (goodput)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Server-Timing stage names of the gateway (server/request_log.py) -> Record fields.
STAGES = {
    "receive": "receive_s",
    "queue": "queue_s",
    "decode": "decode_s",
    "encode": "encode_s",
    "store": "store_s",
    "engine-input": "engine_input_s",
}


@dataclass
class Record:
    """One measured request."""

    path: str
    concurrency: int
    index: int
    video: str
    start_s: float = 0.0  # from the start of its batch
    ok: bool = False
    status: int | None = None
    error: str | None = None  # None when ok
    ttft_s: float | None = None
    e2e_s: float | None = None
    upload_s: float | None = None
    headers_s: float | None = None  # the chat's response headers (vLLM: inputs ready)
    # The gateway's Server-Timing stages (upload and chat summed), seconds.
    receive_s: float | None = None
    queue_s: float | None = None
    decode_s: float | None = None
    encode_s: float | None = None
    store_s: float | None = None
    engine_input_s: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    tpot_ms: float | None = None
    meets_slo: bool | None = None

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict:
        return asdict(self)

    def add_timing(self, header: str | None) -> None:
        """Adds a Server-Timing header's stages (milliseconds) to this record."""
        for item in (header or "").split(","):
            name, _, duration = item.strip().partition(";dur=")
            field_name = STAGES.get(name)
            try:
                seconds = float(duration) / 1000
            except ValueError:
                continue
            if field_name:
                setattr(self, field_name, (getattr(self, field_name) or 0.0) + seconds)


@dataclass
class Slo:
    """Limits a successful request must keep to count in goodput (None: no limit)."""

    ttft_s: float | None
    e2e_s: float | None
    tpot_ms: float | None

    def met(self, record: Record) -> bool:
        if not record.ok:
            return False
        checks = (
            (self.ttft_s, record.ttft_s),
            (self.e2e_s, record.e2e_s),
            (self.tpot_ms, record.tpot_ms),
        )
        return all(value is not None and value <= limit for limit, value in checks if limit)

    def describe(self) -> str:
        parts = [
            f"TTFT ≤ {self.ttft_s:g} s" if self.ttft_s else None,
            f"TPOT ≤ {self.tpot_ms:g} ms" if self.tpot_ms else None,
            f"e2e ≤ {self.e2e_s:g} s" if self.e2e_s else None,
        ]
        text = ", ".join(p for p in parts if p)
        return text or "none (goodput = throughput of successful requests)"

    def as_dict(self) -> dict:
        return {
            "ttft_s": self.ttft_s,
            "tpot_ms": self.tpot_ms,
            "e2e_s": self.e2e_s,
            "text": self.describe(),
        }
