"""The live progress of `edgebench run`: one bar over the cases (worker slots under --processes),
one over the reps of the case in flight, the time left weighted by each case's work (run/eta.py),
redrawn once per event only (see make_progress)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgebench.records import Case, case_label
from edgebench.run import protocol
from edgebench.run.eta import Eta, case_work, format_left
from edgebench.run.processes import ProcessLoop
from edgebench.run.protocol import clip

_PROGRESS_LABEL = ("n_threads", "n_prompt", "n_gen", "depth")


class ProgressEvents:
    """Draws the sweep's progress: one bar over cases (worker slots under --processes), one over the
    reps of the case in flight, and the time left weighted by each case's work (run/eta.py).

    The slots still to come are the runner's (``schedule``; until it says, every case's N processes
    in order). Under -r auto with --processes N a case may ask for more than N processes, one a
    round: the bar's total then grows, and the time left counts only the slots already known."""

    def __init__(self, progress: Progress, cases: list[Case] = (), processes: int = 1):
        self.p = progress
        self.cases = progress.add_task("cases", total=None, left=format_left(None))
        self.reps = progress.add_task("", total=None, visible=False, left="")
        self.n_cases, self.processes = max(len(cases), 1), processes
        self.per = [ProcessLoop.of(c, processes).part(c, 0) for c in cases]  # what one process of each runs
        self.pending = list(range(len(cases) * processes))  # worker slots to come (schedule)
        self.eta, self.slot, self.frac, self.done, self.in_flight = Eta(), 0, 0.0, 0, False

    def _work(self, slot: int):
        return case_work(self.per[slot % self.n_cases]) if self.per else None

    def _left(self) -> None:
        rest = [self._work(s) for s in self.pending if s != self.slot or not self.in_flight]
        left = self.eta.left(rest, self._work(self.slot) if self.in_flight else None, self.frac)
        self.p.update(self.cases, left=format_left(left))

    def schedule(self, slots: list[int]) -> None:
        self.pending = list(slots)
        self.p.update(self.cases, total=self.done + self.in_flight + len(self.pending))
        self.p.refresh()

    def case_start(self, i: int, n: int, case: Case) -> None:
        name = Path(case.model).name if case.model else f"{case.preset} {case.quant_request}"
        self.slot, self.frac, self.in_flight = i, 0.0, True
        self.pending = [s for s in self.pending if s != i]
        k, c = divmod(i, self.n_cases)
        which = f"case {c + 1}/{self.n_cases}"
        if self.processes > 1:
            which += f" process {k + 1}/{self.processes}" if k < self.processes else f" process {k + 1} (-r auto: more)"
        self.p.update(self.cases, total=n, completed=self.done, description=f"{which} {escape(name)}")
        self._left()
        self.p.reset(self.reps, total=case.reps, completed=0, visible=True,
                     description=f"  {escape(case_label(case.to_dict(), _PROGRESS_LABEL))}: loading")
        self.p.refresh()

    def progress(self, i: int, msg: protocol.Progress) -> None:
        stage, rep, reps = msg.stage, msg.rep, msg.reps
        label = {"build": "building model", "warmup": "warmup", "rep": "rep", "profile": f"profiling ({escape(msg.profiler)})",
                 "quality": "quality: generating chunk" if msg.profiler == "generate" else "quality chunk"}[stage]
        if stage == "rep" and reps:
            self.frac = rep / reps
            self._left()
        if stage == "build":
            self.p.update(self.reps, total=reps, completed=rep, description=f"  {label}")
        else:
            self.p.update(self.reps, total=reps, completed=rep, description=f"  {label} {min(rep + 1, reps)}/{reps}")
        self.p.refresh()  # once per event: a rep's event arrives as its timed work starts

    def case_measured(self, i: int, case: Case, status: str, spent: dict[str, float]) -> None:
        if status == "ok" and self.per:  # failed and skipped cases say little about the rest
            self.eta.finished(self._work(i), spent.get("wall_s", 0.0))

    def case_end(self, i: int, status: str, error: str) -> None:
        self.done, self.in_flight, self.frac = self.done + 1, False, 0.0
        self.p.update(self.cases, completed=self.done)
        if self.pending:
            self._left()
        self.p.refresh()
        if status == "failed":
            self.p.console.print(f"[red]case {i + 1} failed:[/red] {escape(clip(error))}")
        elif status == "skipped" and "resume" not in error:
            self.p.console.print(f"[yellow]case {i + 1} skipped:[/yellow] {escape(clip(error))}")


def make_progress(console: Console) -> Progress:
    """The bars, redrawn by ProgressEvents once per event (auto_refresh off): rich's default redraws
    10 times a second from a thread of its own, and on a 2-core board each redraw preempts a compute
    thread of the worker that the others then wait for at ggml's barriers. The elapsed time
    therefore moves once per event, not continuously."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[left]}"), console=console,
                    transient=False, auto_refresh=False)
