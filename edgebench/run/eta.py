"""How long the rest of a sweep will take, weighted by what each case does (a depth sweep's cases
are not equal: a case at depth 4096 fills 4096 tokens every rep before it times anything).

A case's work is counted in two units: prefill tokens (the depth fill, done once per rep and
twice for a split case that times both pp and tg, the prompt, the warmup) and decode steps.
Seconds per unit come from the cases that finished: a least-squares fit of their wall seconds on
(1, prefill tokens, decode steps) once three cases tell the terms apart; before that a decode step
weighs DECODE_STEP_PRIOR prefill tokens and the fit is on (1, weighted units), or with one case
its seconds per weighted unit. Until one case has finished the estimate is unknown (None): no number is better than a
wrong one. Pure functions of the cases and the measured seconds; session.py draws the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgebench.records import Case

DECODE_STEP_PRIOR = 20.0  # a decode step costs about this many prefill tokens (CPU, small models)


@dataclass(frozen=True)
class Work:
    """What one case (or one worker process of it) computes: prefill tokens and decode steps."""

    prefill_tokens: float
    decode_steps: float


def case_work(case: Case, reps: float | None = None) -> Work:
    """The work of ``case`` over ``reps`` timed reps (default case.reps; under -r auto pass an
    expected count), plus its warmup (one rep with at most 2 decode steps)."""
    reps = case.reps if reps is None else reps
    if not case.speed:
        return Work(0.0, 0.0)
    fills = 2 if case.test == "split" and case.n_prompt and case.n_gen else 1
    per_rep_prefill = case.depth * fills + case.n_prompt
    warm = (case.depth * fills + case.n_prompt, min(case.n_gen, 2)) if case.warmup else (0, 0)
    return Work(reps * per_rep_prefill + warm[0], reps * case.n_gen + warm[1])


@dataclass
class Eta:
    """Seconds left in a sweep, refined as cases finish (``finished``)."""

    done: list[tuple[Work, float]] = field(default_factory=list)  # (work, wall seconds) of finished cases

    def finished(self, work: Work, wall_s: float) -> None:
        self.done.append((work, max(wall_s, 0.0)))

    def rates(self) -> tuple[float, float, float] | None:
        """(seconds per case, per prefill token, per decode step), or None before any case finished:
        the least-squares fit of the finished cases' seconds on their work, with as many terms as
        they tell apart (a depth sweep's cases all decode alike: decode keeps its prior weight)."""
        if not self.done:
            return None
        w = np.array([[1.0, d.prefill_tokens, d.decode_steps] for d, _ in self.done])
        y = np.array([s for _, s in self.done])
        if len(self.done) >= 3 and np.linalg.matrix_rank(w) == 3:
            coef = np.linalg.lstsq(w, y, rcond=None)[0]
            if (coef >= 0).all():
                return float(coef[0]), float(coef[1]), float(coef[2])
        units = w[:, 1] + DECODE_STEP_PRIOR * w[:, 2]
        if len(self.done) >= 2 and np.ptp(units) > 0:
            fixed, per_unit = np.linalg.lstsq(np.column_stack([np.ones_like(units), units]), y, rcond=None)[0]
            if fixed >= 0 and per_unit >= 0:
                return float(fixed), float(per_unit), float(per_unit * DECODE_STEP_PRIOR)
        if units.sum() <= 0:
            return float(y.mean()), 0.0, 0.0
        per_unit = float(y.sum() / units.sum())
        return 0.0, per_unit, per_unit * DECODE_STEP_PRIOR

    def seconds(self, work: Work) -> float | None:
        r = self.rates()
        if r is None:
            return None
        return r[0] + r[1] * work.prefill_tokens + r[2] * work.decode_steps

    def left(self, remaining: list[Work], in_flight: Work | None = None, in_flight_done: float = 0.0) -> float | None:
        """Seconds left: every remaining case, plus the part not yet done (``in_flight_done``, a
        fraction 0..1) of the case in flight. None while unknown."""
        if self.rates() is None:
            return None
        total = sum(self.seconds(w) for w in remaining)
        if in_flight is not None:
            total += self.seconds(in_flight) * (1.0 - min(max(in_flight_done, 0.0), 1.0))
        return total


def format_left(seconds: float | None) -> str:
    """"left ~3m", "left ~45s", "left ~1h05m"; "left ?" while unknown."""
    if seconds is None or math.isnan(seconds):
        return "left ?"
    s = int(round(seconds))
    if s < 60:
        return f"left ~{s}s"
    if s < 3600:
        return f"left ~{round(s / 60)}m"
    return f"left ~{s // 3600}h{(s % 3600) // 60:02d}m"
