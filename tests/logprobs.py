"""Comparing answers by their first step's log-probs (what the model made of its input)."""

from __future__ import annotations

import httpx


def first_step(reply: httpx.Response) -> dict[str, float]:
    """The top log-probs of an answer's first token, by token."""
    assert reply.status_code == 200, reply.text
    top = reply.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {entry["token"]: entry["logprob"] for entry in top}


def distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Largest log-prob difference over the top tokens (infinite if they differ)."""
    if set(a) != set(b):
        return float("inf")
    return max(abs(a[token] - b[token]) for token in a)
