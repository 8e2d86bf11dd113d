"""One `edgebench run`: validate everything, plan the cases, run them with live progress, store
them case by case and keep the run folder current. Returns an Outcome; the CLI presents it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from edgebench.analysis.summary import export_run
from edgebench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, InputError
from edgebench.machine.environment import collect_environment, fair_run_warnings, measure_memory_bandwidth, physical_cores
from edgebench.records import Case, case_label
from edgebench.run import plan as planmod
from edgebench.run import protocol, runner
from edgebench.run import spec as specmod
from edgebench.store.bundle import write_run_json
from edgebench.store.database import Store, store_url

console = Console(stderr=True)


_PROGRESS_LABEL = ("n_threads", "n_prompt", "n_gen", "depth")


class ProgressEvents:
    """Draws the sweep's progress: one bar over cases, one over the reps of the case in flight."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.cases = progress.add_task("cases", total=None)
        self.reps = progress.add_task("", total=None, visible=False)

    def case_start(self, i: int, n: int, case: Case) -> None:
        name = Path(case.model).name if case.model else f"{case.preset} {case.quant_request}"
        self.p.update(self.cases, total=n, completed=i, description=f"case {i + 1}/{n} {name}")
        self.p.reset(self.reps, total=case.reps, completed=0, visible=True,
                     description=f"  {case_label(case.to_dict(), _PROGRESS_LABEL)}: loading")

    def progress(self, i: int, msg: protocol.Progress) -> None:
        stage, rep, reps = msg.stage, msg.rep, msg.reps
        label = {"build": "building model", "warmup": "warmup", "rep": "rep", "profile": f"profiling ({msg.profiler})",
                 "quality": "quality: generating chunk" if msg.profiler == "generate" else "quality chunk"}[stage]
        if stage == "build":
            self.p.update(self.reps, total=reps, completed=rep, description=f"  {label}")
        else:
            self.p.update(self.reps, total=reps, completed=rep, description=f"  {label} {min(rep + 1, reps)}/{reps}")

    def case_end(self, i: int, status: str, error: str) -> None:
        self.p.update(self.cases, completed=i + 1)
        if status == "failed":
            self.p.console.print(f"[red]case {i + 1} failed:[/red] {error}")
        elif status == "skipped" and "resume" not in error:
            self.p.console.print(f"[yellow]case {i + 1} skipped:[/yellow] {error}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
                    transient=False)


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edgebench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"output folder {out} cannot be written: {e.strerror or e}") from None


@dataclass
class Outcome:
    """What a run left behind: its exit code (0 complete, 1 some case failed, 130 interrupted), where
    it is stored, and the summary rows of its cases (empty when interrupted)."""

    code: int
    store: Store
    run_id: str
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def _plan(spec: specmod.RunSpec) -> tuple[list, list[str]]:
    from edgebench.run import quality_plan

    refs, notes = planmod.resolve_models(spec)
    planned, qnotes = quality_plan.apply(spec, planmod.expand(spec, refs, physical_cores()))
    return planned, notes + qnotes


def _device(spec: specmod.RunSpec) -> tuple[Any, dict[str, Any]]:
    from edgebench.machine import profiles

    profile, verified, detail = profiles.resolve(spec.device, verify=spec.verify)
    return profile, {"device": profile.name, "device_verified": verified, "device_detail": detail,
                     "device_memory_bytes": profiles.memory_bytes(profile)}


def _fit_check(memory_bytes: int | None):
    from edgebench.models.memory_model import fit_problem

    return (lambda case: fit_problem(case, memory_bytes)) if memory_bytes else None


def start(options: dict[str, Any], config: Path | None, out: Path, store_target: str | None = None) -> Outcome:
    cfg = specmod.load_toml(config) if config else None
    spec = planmod.canonical_spec(specmod.build_spec(options, cfg))  # stored as the run's spec
    if cfg and cfg.get("out") and out == Path("reports"):
        out = Path(cfg["out"])
    profile, device_env = _device(spec)
    device = profile.name
    planned, notes = _plan(spec)
    check_writable(out)
    store = Store(store_target or out)
    run_id = runner.new_run_id()
    env = collect_environment() | device_env
    env["fair_run_warnings"] = fair_run_warnings(profile, env)
    if not profile.mem_bandwidth_gbs:  # no spec figure: measure one for the roofline (~1 s)
        env["measured_mem_bandwidth_gbs"] = round(measure_memory_bandwidth(), 2)
    store.create_run(run_id, device, spec.to_dict(), env)
    for n in notes:
        console.print(f"[yellow]note:[/yellow] {n}")
    for w in env["fair_run_warnings"]:
        console.print(f"[yellow]fair-run warning:[/yellow] {w}")
    if not device_env["device_verified"]:
        console.print(f"[yellow]warning:[/yellow] results are unverified: {device_env['device_detail']}")
    console.print(f"run [bold]{run_id}[/bold]: {len(planned)} case(s) on {device} -> {out / run_id}")
    return _execute(store, run_id, spec, planned, out, set())


def resume(run_id: str, out: Path, store_target: str | None = None) -> Outcome:
    store = Store(store_target or out, create=False)
    run = store.get_run(run_id)
    spec = specmod.RunSpec.from_dict(run.spec)
    planned, _ = _plan(spec)
    done = _done_keys(store.get_cases(run.run_id))
    n_done = sum(case.key() in done for _, case in planned)
    console.print(f"resuming run [bold]{run.run_id}[/bold]: {n_done} of {len(planned)} case(s) already measured")
    return _execute(store, run.run_id, spec, planned, out, done)


def _done_keys(cases: list[dict[str, Any]]) -> set[str]:
    """Keys of the measured cases: as stored, and from the stored columns under today's Case.key(),
    so a run stored when a preset case's key held its built path still resumes without measuring
    those cases again."""
    done = set()
    for c in cases:
        if c["status"] == "ok":
            done.add(c["case_key"])
            try:
                done.add(Case.from_dict(c).key())
            except (TypeError, ValueError):  # columns an older edgebench did not validate
                pass
    return done


def _between(spec: specmod.RunSpec):
    if not spec.cooldown and spec.cooldown_temp is None:
        return None

    def wait() -> None:
        from edgebench.profilers.telemetry import wait_cooldown

        wait_cooldown(spec.cooldown, spec.cooldown_temp)

    return wait


def _execute(store: Store, run_id: str, spec: specmod.RunSpec, planned: list, out: Path,
             done: set[str]) -> Outcome:
    run_dir = out / run_id
    write_run_json(store, run_id, run_dir)
    _stop_on_sigterm()
    status = "interrupted"
    t0 = time.monotonic()
    try:
        with _progress() as p:
            counts = runner.run_cases(store, run_id, planned, run_dir, ProgressEvents(p), done, _between(spec),
                                      _fit_check(store.get_run(run_id).env.get("device_memory_bytes")))
        status = "complete" if counts.get("failed", 0) == 0 else "partial"
    except KeyboardInterrupt:
        store_arg = "" if store.url == store_url(out) else f" --store {store.url}"
        console.print(f"[yellow]interrupted[/yellow]: finished cases are stored; continue with "
                      f"`edgebench run --resume {run_id} --out {out}{store_arg}`")
        return Outcome(EXIT_INTERRUPTED, store, run_id, run_dir)
    finally:
        store.finish_run(run_id, status)
        rows = export_run(store, run_id, run_dir)
    return Outcome(EXIT_OK if status == "complete" else EXIT_FAILED, store, run_id, run_dir, rows, time.monotonic() - t0)


def _stop_on_sigterm() -> None:
    """SIGTERM (a CI job's timeout, `kill`) stops a run like Ctrl-C: finished cases are kept."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
