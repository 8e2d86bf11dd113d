"""A case run in several worker processes (`--processes N`, pyperf's answer to between-process
variance: one process's reps share its memory layout, its page cache, its clock ramp): how many reps
each process runs, how many processes a case gets, and how the processes' results fold into one case.

The case's info says which reps each process ran ("processes": [[reps of process 0], ...]), so the
summary can set the spread between processes against the spread within them (analysis/summary.py).

Fixed -r N: exactly N processes of ceil(reps / N) reps each. -r auto: each process runs its own
-r auto loop (at most --max-reps reps: the cap is per process), and N is the least number of
processes: after a case's N-th process, and each later one, the runner asks ProcessLoop whether the
95% interval of the mean of the processes' means (the summary's between-process interval,
analysis.summary.process_spread) of every timed throughput is within --target-ci; if not, the case
gets one more process in the next round, up to --max-processes (default MAX_PROCESSES_FACTOR x N)
and the case's --max-time counted over all its processes' reps. Why the loop stopped (target,
max_processes, max_time, failed) goes to info["process_loop"] and to the row's reps_stop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from edgebench.records import Case

if TYPE_CHECKING:
    from edgebench.records import Sample
    from edgebench.run.runner import CaseResult

MAX_PROCESSES_FACTOR = 4  # -r auto --processes N: at most 4 N processes per case unless --max-processes
MIN_TIME_LEFT_S = 1e-3  # a process started under --max-time measures at least one rep (RepPlan: 0 = no limit)


def process_reps(reps: int, processes: int) -> int:
    """Timed reps each of a case's worker processes runs: ceil(reps / processes), at least 1."""
    return max(1, -(-reps // processes))


def process_ci(samples: list[Sample], processes: list[list[int]], n_prompt: int, n_gen: int) -> dict[str, float | None]:
    """The relative 95% interval half-width of the mean of the processes' means of each timed
    throughput the case measured: analysis.summary.process_spread's between-process interval (one
    place for the formula; the row's ci_pct takes it where it is wider)."""
    import pandas as pd

    from edgebench.analysis.summary import process_spread

    s = pd.DataFrame([asdict(x) for x in samples], columns=["rep", "phase", "metric", "value", "idx", "label", "t_ns"])
    spread = process_spread(s, processes, n_prompt, n_gen)
    measured = set(s["metric"])
    out: dict[str, float | None] = {}
    if n_prompt and "prefill_ns" in measured:
        out["prefill_tok_s"] = spread["prefill_between_ci"]
    if n_gen and measured & {"decode_step_ns", "decode_ns"}:
        out["decode_tok_s"] = spread["decode_between_ci"]
    return out


@dataclass
class ProcessLoop:
    """How many worker processes one case runs: ``minimum`` (--processes N), and under -r auto
    (``target`` > 0, N >= 2) more, one a round, up to ``maximum`` processes and ``max_time_s``
    seconds of reps over all of them (module docstring). ``used``, ``rep_s``, ``ci`` and ``stop``
    say where it stands."""

    minimum: int = 1
    maximum: int = 1
    target: float = 0.0
    max_time_s: float = 0.0
    used: int = 0
    rep_s: float = 0.0  # seconds of reps (timed and untimed parts) over the processes so far
    ci: dict[str, float | None] = field(default_factory=dict)
    stop: str = ""
    wants_more: bool = False  # past the minimum: the last process asked for another

    @classmethod
    def of(cls, case: Case, processes: int, max_processes: int = 0) -> ProcessLoop:
        """The loop of ``case`` under --processes ``processes`` and --max-processes (0: the default).
        A case that is not timed (quality only) or runs in one process: one process, as always."""
        if processes <= 1 or not case.speed:
            return cls()
        if case.target_ci <= 0:
            return cls(processes, processes)
        return cls(processes, max(max_processes or MAX_PROCESSES_FACTOR * processes, processes),
                   case.target_ci, case.max_time_s)

    @property
    def split(self) -> bool:
        """Whether the case runs in several processes (merged into one stored case)."""
        return self.minimum > 1

    @property
    def auto(self) -> bool:
        return self.split and self.target > 0

    def part(self, case: Case, k: int) -> Case:
        """The case process ``k`` runs: its share of the reps (fixed -r) or the per-process -r auto
        loop with what is left of --max-time; quality passes and intrusive profilers in process 0 only."""
        if not self.split:
            return case
        if self.auto:
            part = replace(case, max_time_s=max(self.max_time_s - self.rep_s, MIN_TIME_LEFT_S) if self.max_time_s else 0.0)
        else:
            part = replace(case, reps=process_reps(case.reps, self.minimum))
        return replace(part, quality=False, profile=()) if k else part

    def will_run(self, k: int) -> bool:
        """Whether process ``k`` (0-based) is known to come: below the minimum, or asked for."""
        if self.stop or k < self.used:
            return False
        return k < self.minimum or (self.wants_more and k == self.used)

    def finished(self, res: CaseResult, rep_s: float, n_prompt: int, n_gen: int) -> bool:
        """Fold in one finished process (``res``: the case merged so far); True when the case runs
        no more processes (``stop`` says why under -r auto)."""
        self.used += 1
        self.rep_s += rep_s
        self.wants_more = False
        if res.status != "ok":  # failed (or skipped: projected not to fit): stored with what it had
            self.stop = res.status
            return True
        if self.used < self.minimum:
            return False
        if not self.auto:
            self.stop = "fixed"
            return True
        self.ci = process_ci(res.samples, res.info.get("processes") or [], n_prompt, n_gen)
        if self.ci and all(c is not None and c <= self.target for c in self.ci.values()):
            self.stop = "target"
        elif self.used >= self.maximum:
            self.stop = "max_processes"
        elif self.max_time_s and self.rep_s >= self.max_time_s:
            self.stop = "max_time"
        else:
            self.wants_more = True
            return False
        return True

    def info(self) -> dict[str, Any]:
        """The case's info["process_loop"] (-r auto with --processes N): what was asked, what was
        used, the interval over processes reached and why the loop stopped."""
        return {"min_processes": self.minimum, "max_processes": self.maximum, "target_ci": self.target,
                "max_time_s": self.max_time_s or None, "used": self.used, "rep_s": round(self.rep_s, 4),
                "ci_reached": dict(self.ci), "stop": self.stop}


def close(res: CaseResult, loop: ProcessLoop) -> CaseResult:
    """The case's result once its last process ran: under -r auto its loop's info beside "reps",
    and the row's reps_stop naming why the process loop stopped ("target; processes max_time")."""
    if loop.auto:
        res.info["process_loop"] = loop.info()
        if "reps" in res.info:
            stop = res.info["reps"].get("stop") or ""
            res.info["reps"]["stop"] = f"{stop}; processes {loop.stop}" if stop else f"processes {loop.stop}"
    return res


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


def upcoming(loops: list[ProcessLoop], done: set[int], slot: int) -> list[int]:
    """The worker slots (k * cases + case) known to come after ``slot``, in the order they run
    (round by round): the progress bar's rest, which grows when a case asks for another process."""
    n = len(loops)
    last = max([slot // n + 1] + [lp.minimum for lp in loops])
    return [r * n + j for r in range(slot // n, last + 1) for j in range(n)
            if r * n + j > slot and j not in done and loops[j].will_run(r)]
