"""A case run in several worker processes (`--processes N`, pyperf's answer to between-process
variance: one process's reps share its memory layout, its page cache, its clock ramp): how many reps
each process runs, and how the processes' results fold into one case.

The case's info says which reps each process ran ("processes": [[reps of process 0], ...]), so the
summary can set the spread between processes against the spread within them (analysis/summary.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebench.run.runner import CaseResult


def process_reps(reps: int, processes: int) -> int:
    """Timed reps each of a case's worker processes runs: ceil(reps / processes), at least 1."""
    return max(1, -(-reps // processes))


def merge(acc: CaseResult | None, part: CaseResult, k: int) -> CaseResult:
    """Fold worker process ``k``'s result into the case's: its timed reps renumbered after those
    already held (rep numbers stay distinct), the reps of each process listed in info["processes"]."""
    if acc is None:
        from edgebench.run.runner import CaseResult

        acc = CaseResult(part.status, part.error, dict(part.info), [], part.model)
        acc.info["processes"] = []
        acc.info["reps_by_process"] = []
    offset = max((s.rep + 1 for s in acc.samples if s.rep >= 0), default=0)
    acc.samples.extend(replace(s, rep=s.rep + offset) if s.rep >= 0 else s for s in part.samples)
    acc.info["processes"].append(sorted({s.rep + offset for s in part.samples
                                         if s.rep >= 0 and s.metric in ("prefill_ns", "decode_step_ns")}))
    if "reps" in part.info:
        acc.info["reps_by_process"].append(part.info["reps"])
        acc.info["reps"] = _merged_reps(acc.info["reps_by_process"], acc.info["processes"])
    acc.status, acc.error, acc.model = part.status, part.error, part.model or acc.model
    return acc


def _merged_reps(per_process: list[dict[str, Any]], processes: list[list[int]]) -> dict[str, Any]:
    """info["reps"] of a case run in several processes: counts summed, discarded reps by process."""
    out = dict(per_process[-1])
    out["measured"] = sum(p.get("measured", 0) for p in per_process)
    out["used"] = sum(p.get("used", 0) for p in per_process)
    out["discarded"] = [[k, r] for k, p in enumerate(per_process) for r in p.get("discarded", ())]
    out["stop"] = ",".join(sorted({p.get("stop") or "" for p in per_process}))
    out["ci_reached"] = None  # per process in reps_by_process; the case's interval is computed on read
    return out
