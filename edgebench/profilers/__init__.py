"""Profiler registry (lazy imports, like the backends)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgebench.errors import InputError, did_you_mean

if TYPE_CHECKING:
    from edgebench.profilers.base import Profiler

_REGISTRY: dict[str, str] = {
    "memory": "edgebench.profilers.memory:MemoryProfiler",
    "ops": "edgebench.profilers.ops:OpsProfiler",
    "telemetry": "edgebench.profilers.telemetry:TelemetryProfiler",
}
# Always on: cheap and passive (the memory sampler's overhead is measured in benchmarks/).
DEFAULT_PROFILERS: tuple[str, ...] = ("memory",)
OPTIONAL_PROFILERS: tuple[str, ...] = tuple(n for n in _REGISTRY if n not in DEFAULT_PROFILERS)


def check_profiler_name(name: str) -> str:
    if name not in _REGISTRY:
        raise InputError(f"unknown profiler {name!r}{did_you_mean(name, _REGISTRY)}; profilers: {', '.join(OPTIONAL_PROFILERS)}")
    return name


def profiler_class(name: str) -> type[Profiler]:
    module, cls = _REGISTRY[check_profiler_name(name)].split(":")
    return getattr(importlib.import_module(module), cls)
