"""The Profiler interface: something that observes the measured phases of a case.

Passive profilers (memory, telemetry) run during the plain timing reps and must not slow them:
``phase()`` only marks a window, the work happens in a background thread or after the fact.
Intrusive profilers (ops) change timing; the worker gives them reps of their own, so their
presence never changes the throughput numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

from edgebench.records import Sample

if TYPE_CHECKING:
    from edgebench.backends.base import Backend


class Profiler(ABC):
    name: ClassVar[str]
    # Backend capabilities the profiler needs; without them it is skipped with a reason.
    requires: ClassVar[frozenset[str]] = frozenset()
    intrusive: ClassVar[bool] = False
    def reps_for(self, case) -> int:
        """How many reps of its own an intrusive profiler runs (after the plain timing reps)."""
        return max(1, min(case.reps, 2))

    def attach(self, backend: Backend) -> None:
        """Called once after the backend loaded (intrusive profilers install their hooks here)."""

    def detach(self, backend: Backend) -> None:
        """Called once when the profiler's reps are done (remove hooks, stop threads)."""

    @contextmanager
    def phase(self, phase: str, rep: int) -> Iterator[None]:
        """Mark the window of one phase of one rep. Nothing slow may happen here."""
        yield

    @abstractmethod
    def collect(self) -> list[Sample]:
        """Samples gathered so far (drained: a second call returns only newer ones)."""

    def skip_reason(self, backend: Backend) -> str | None:
        missing = self.requires - backend.capabilities
        if missing:
            return f"{self.name} profiler needs backend capabilities {sorted(missing)} that {backend.name} lacks"
        return None
