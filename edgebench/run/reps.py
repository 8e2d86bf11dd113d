"""How many timed reps a case gets: a fixed count (llama-bench's -r N), or `-r auto`: repeat until
the 95% confidence interval of each timed throughput's mean is within the target, with a minimum
and a cap on reps and on time.

Under `-r auto` a first rep that is an outlier (cold caches, a clock still ramping up, a page-in)
is discarded as extra warmup: its timing samples are held back until two more reps can judge it,
then stored with rep DISCARDED_REP (kept, never summarised: analysis/per_rep.py reads rep >= 0)
and a replacement rep is run. The decision and the interval reached go to the case's info
("reps"), so a row says how many reps it used and why it stopped.

Runs in the worker; pure decisions are functions of the per-rep values so they can be tested alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgebench.analysis.per_rep import ci_halfwidth_rel
from edgebench.records import Sample

MIN_AUTO_REPS = 3  # an interval from fewer means little
DISCARDED_REP = -2  # rep of a timed rep discarded as extra warmup (-1: load and warmup samples)
OUTLIER_MIN = 0.05  # a first rep within 5% of the others is never an outlier
OUTLIER_SPREAD = 3.0  # ... nor within 3x the spread between the others


def first_is_outlier(first: float, others: list[float]) -> bool:
    """Whether the first rep's time is far from the next reps': further than OUTLIER_MIN of their
    mean and than OUTLIER_SPREAD times their own spread (relative range)."""
    if len(others) < 2:
        return False
    mean = sum(others) / len(others)
    if mean <= 0:
        return False
    spread = (max(others) - min(others)) / mean
    return abs(first / mean - 1.0) > max(OUTLIER_MIN, OUTLIER_SPREAD * spread)


@dataclass
class RepPlan:
    """The stopping rule of one case. ``target`` 0: exactly ``max_reps`` reps (fixed -r)."""

    max_reps: int
    target: float = 0.0
    max_time_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    rates: dict[str, list[float]] = field(default_factory=dict)  # metric -> per kept rep
    rep_ns: list[float] = field(default_factory=list)  # each measured rep's timed total
    held: list[Sample] | None = None  # the first rep's timing samples, until judged
    discarded: list[int] = field(default_factory=list)
    stop: str = ""

    @property
    def auto(self) -> bool:
        return self.target > 0

    def add(self, rep: int, prefill_ns: int | None, steps: list[int], n_prompt: int, n_gen: int,
            timed: list[Sample], emit: Callable[[list[Sample]], None]) -> None:
        """Record one measured rep and emit its timing samples (the first one's, under auto, once judged)."""
        total = float((prefill_ns or 0) + sum(steps))
        self.rep_ns.append(total)
        rates = {}
        if prefill_ns and n_prompt:
            rates["prefill_tok_s"] = n_prompt / (prefill_ns / 1e9)
        if steps and n_gen:
            rates["decode_tok_s"] = n_gen / (sum(steps) / 1e9)
        for k, v in rates.items():
            self.rates.setdefault(k, []).append(v)
        if not self.auto:
            emit(timed)
            return
        if rep == 0:
            self.held = timed
            return
        emit(timed)
        if self.held is not None and len(self.rep_ns) >= 3:
            if first_is_outlier(self.rep_ns[0], self.rep_ns[1:]):
                self.discarded.append(0)
                for v in self.rates.values():
                    v.pop(0)
                emit([Sample(DISCARDED_REP, s.phase, s.metric, s.value, s.idx, s.label, s.t_ns) for s in self.held])
            else:
                emit(self.held)
            self.held = None

    def flush(self, emit: Callable[[list[Sample]], None]) -> None:
        """At the end: a first rep never judged (the case stopped early) is kept."""
        if self.held is not None:
            emit(self.held)
            self.held = None

    def more(self) -> bool:
        """Whether to measure another rep."""
        measured = len(self.rep_ns)
        if measured >= self.max_reps + len(self.discarded):
            self.stop = self.stop or ("max_reps" if self.auto else "fixed")
            return False
        if not self.auto:
            return True
        if self.max_time_s and time.monotonic() - self.started >= self.max_time_s and measured >= 1:
            self.stop = "max_time"
            return False
        kept = measured - len(self.discarded)
        if kept >= MIN_AUTO_REPS and self.held is None:
            ci = self.ci()
            if ci and all(c is not None and c <= self.target for c in ci.values()):
                self.stop = "target"
                return False
        return True

    def ci(self) -> dict[str, float | None]:
        return {k: ci_halfwidth_rel(v) for k, v in self.rates.items()}

    def info(self) -> dict[str, object]:
        """The case's info["reps"]: what was asked, what was used, and why it stopped."""
        return {"mode": "auto" if self.auto else "fixed", "target_ci": self.target or None,
                "max_reps": self.max_reps, "max_time_s": self.max_time_s or None,
                "measured": len(self.rep_ns), "used": len(self.rep_ns) - len(self.discarded),
                "discarded": list(self.discarded), "ci_reached": self.ci(), "stop": self.stop}
