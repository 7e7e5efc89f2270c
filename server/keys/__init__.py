"""API keys: who may ask (`auth`: the `CallerDep` dependency), how much (`limits`), what
they used (`accounting`), tenants kept apart upstream (`tenancy`), the key records
(`records`) and `arc-gateway keys ...` (`cli`)."""

from .auth import ANONYMOUS, Caller, CallerDep
from .records import KeyLimits

__all__ = ["ANONYMOUS", "Caller", "CallerDep", "KeyLimits"]
