"""matplotlib for the benchmarks' PNG plots, drawn off-screen; plots are optional."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType | None:
    """matplotlib.pyplot on the Agg backend (no display), or None when matplotlib is not
    installed (the reports are then written without their plots)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
