"""One `edgebench run`: validate everything, plan the cases, run them with live progress, store
them case by case and keep the run folder current. Returns an Outcome; the CLI presents it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from edgebench.analysis.summary import export_run
from edgebench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, InputError
from edgebench.machine.environment import collect_environment, fair_run_warnings, memory_bandwidth_this_boot, physical_cores
from edgebench.models import cache
from edgebench.records import Case
from edgebench.run import plan as planmod
from edgebench.run import runner
from edgebench.run import spec as specmod
from edgebench.run.progress import ProgressEvents, make_progress
from edgebench.run.protocol import clip
from edgebench.store import liveness, run_ids
from edgebench.store.bundle import append_samples_csv, start_samples_csv, write_run_json
from edgebench.store.database import Store, store_url

console = Console(stderr=True, soft_wrap=True)  # a long line (a path, an error) stays one line in a log


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".edgebench-write-test-{os.getpid()}"  # one per process: runs may start together
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"output folder {out} cannot be written: {e.strerror or e}") from None


def _warn(text: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(clip(text))}", soft_wrap=True)


def _one_line(e: BaseException) -> str:
    """An exception as one clipped line; a database error by its driver's message (SQLAlchemy's own
    adds the SQL and a link)."""
    return clip(f"{type(e).__name__}: {getattr(e, 'orig', None) or e}")


@dataclass
class Outcome:
    """What a run left behind: its exit code (0 complete, 1 some case failed or the run failed, 130
    interrupted), where it is stored, and the summary rows of its cases (empty when interrupted or failed)."""

    code: int
    store: Store
    run_id: str
    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    failed: bool = False  # the parent itself failed (the run is stored as `failed`; it said why)
    overhead: dict[str, Any] = field(default_factory=dict)  # run.json's "overhead" (overhead_summary)


# The harness's own seconds, outside the timed reps, per worker slot (runner.run_cases' overhead):
# worker start + imports to its first message, the preset build, the runtime's import, the model's
# hash, its load, the warmup, the untimed parts of the reps (cache reset, depth fill), the intrusive
# profilers' own reps, the worker's exit, the store write and the run-folder write.
OVERHEAD_PARTS = ("startup_s", "build_s", "backend_import_s", "hash_s", "load_s", "warmup_s", "reps_untimed_s",
                  "profile_s", "exit_s", "store_s", "folder_s")


def overhead_summary(slots: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """run.json's "overhead": the parts summed over the run, the timed reps' seconds and their
    fraction of the run's wall time, the cooldowns asked for, and each worker slot's parts."""
    total = {p: round(sum(s.get(p, 0.0) for s in slots), 4) for p in OVERHEAD_PARTS}
    timed = sum(s.get("timed_s", 0.0) for s in slots)
    return {"wall_s": round(wall_s, 4), "timed_s": round(timed, 4),
            "timed_fraction": round(timed / wall_s, 4) if wall_s > 0 else None,
            "harness_s": round(sum(total.values()), 4), "cooldown_s": round(sum(s.get("cooldown_s", 0.0) for s in slots), 4),
            "parts": total, "cases": [{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in slots]}


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


def _precheck(memory_bytes: int | None):
    """The runner's precheck: settings the runtime refuses outright (Backend.refusal), then the
    projected fit on the device; either way the case is stored as skipped and no worker starts."""
    from edgebench.models.memory_model import fit_problem

    def check(case: Case) -> str | None:
        return _refusal(case) or (fit_problem(case, memory_bytes) if memory_bytes else None)

    return check


def _refusal(case: Case) -> str | None:
    from edgebench.backends import backend_class

    return backend_class(case.backend).refusal(case)


def _refuse_if_none_can_run(planned: list) -> None:
    """Every planned case refused by its runtime (e.g. -ctv q8_0 -fa off): bad input, exit 2."""
    reasons = [_refusal(c) for _, c in planned]
    if planned and all(reasons):
        raise InputError(reasons[0] if len(set(reasons)) == 1 else f"no case can run: {reasons[0]} (and others)")


def start(options: dict[str, Any], config: Path | None, out: Path, store_target: str | None = None) -> Outcome:
    cfg = specmod.load_toml(config) if config else None
    spec = planmod.canonical_spec(specmod.build_spec(options, cfg))  # stored as the run's spec
    if cfg and cfg.get("out") and out == Path("reports"):
        out = Path(cfg["out"])
    profile, device_env = _device(spec)
    device = profile.name
    planned, notes = _plan(spec)
    _refuse_if_none_can_run(planned)
    check_writable(out)
    store = Store(store_target or out)
    run_id = run_ids.new()
    env = collect_environment() | device_env | {liveness.OWNER_KEY: liveness.owner()}
    env["fair_run_warnings"] = fair_run_warnings(profile, env)
    if not profile.mem_bandwidth_gbs:  # no spec figure: measure one for the roofline (~1 s, once a boot)
        gbs, why, when = memory_bandwidth_this_boot(cache.home() / "mem-bandwidth.json")
        env["measured_mem_bandwidth_gbs"] = None if gbs is None else round(gbs, 2)
        env["mem_bandwidth_measured"] = when
        if why:
            env["mem_bandwidth_unmeasured"] = why
    runner.with_retry(store.create_run, run_id, device, spec.to_dict(), env)
    for n in notes:
        console.print(f"[yellow]note:[/yellow] {escape(n)}")
    for w in env["fair_run_warnings"]:
        console.print(f"[yellow]fair-run warning:[/yellow] {escape(w)}")
    if not device_env["device_verified"]:
        _warn(f"results are unverified: {device_env['device_detail']}")
    console.print(f"run [bold]{run_id}[/bold]: {len(planned)} case(s) on {escape(device)} -> {escape(str(out / run_id))}")
    return _execute(store, run_id, spec, planned, out, set())


def resume(run_id: str, out: Path, store_target: str | None = None, options: dict[str, Any] | None = None,
           config: Path | None = None) -> Outcome:
    """Finish a partial run as it was planned. Options given with --resume must agree with the
    stored spec (the same command line again is fine); any that differ are an error naming them."""
    store = Store(store_target or out, create=False)
    run = store.get_run(run_id)
    _check_resume_options(run, options or {}, config)
    o = run.env.get(liveness.OWNER_KEY) or {}
    if run.status == "running" and liveness.owner_alive(o):
        raise InputError(f"run {run.run_id} is still running (pid {o.get('pid')}); stop it first")
    spec = specmod.RunSpec.from_dict(run.spec)
    planned, _ = _plan(spec)
    done = _done_keys(store.get_cases(run.run_id))
    n_done = sum(case.key() in done for _, case in planned)
    runner.with_retry(liveness.claim, store, run)
    console.print(f"resuming run [bold]{run.run_id}[/bold]: {n_done} of {len(planned)} case(s) already measured")
    return _execute(store, run.run_id, spec, planned, out, done)


def _check_resume_options(run, options: dict[str, Any], config: Path | None) -> None:
    """InputError naming each spec field the given options set differently from the stored run's."""
    if not config and all(v is None for v in options.values()):
        return
    cfg = specmod.load_toml(config) if config else None
    given = planmod.canonical_spec(specmod.build_spec(options, cfg)).to_dict()
    default, stored = specmod.RunSpec().to_dict(), specmod.RunSpec.from_dict(run.spec).to_dict()
    diffs = []
    for k, v in given.items():
        if k == "sweep":
            for name, values in v.items():
                if values != default["sweep"].get(name) and values != stored["sweep"].get(name):
                    diffs.append(f"{name} {values} (the run has {stored['sweep'].get(name, 'the default')})")
        elif v != default.get(k) and v != stored.get(k):
            diffs.append(f"{k} {v} (the run has {stored.get(k)})")
    if diffs:
        raise InputError(f"--resume {run.run_id} finishes the run as it was planned, but these options differ "
                         f"from it: {'; '.join(diffs)}; drop them, or start a new run")


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


class _Folder:
    """The run folder, kept current case by case: samples.csv appended and run.json rewritten
    (atomically) after each case is stored, so after a crash the folder says what was finished.
    A folder write that fails (a full disk) is a warning, once: the store holds every case, and
    the folder is rewritten from it when the run ends."""

    def __init__(self, store: Store, run_id: str, run_dir: Path, rerun: set[int], extra=lambda: {}):
        self.store, self.run_id, self.run_dir, self.ok, self.extra = store, run_id, run_dir, True, extra

        def begin() -> None:
            write_run_json(store, run_id, run_dir)
            kept = store.get_samples(run_id)  # a resume: the cases it keeps; reruns append theirs
            start_samples_csv(run_dir, kept[~kept["case_id"].isin(rerun)])

        self._write(begin)

    def saved(self, case_id: int, case: Case, samples: list) -> None:
        def update() -> None:
            append_samples_csv(self.run_dir, self.run_id, case_id, samples)
            write_run_json(self.store, self.run_id, self.run_dir, self.extra())

        self._write(update)

    def _write(self, write) -> None:
        if not self.ok:
            return
        try:
            write()
        except OSError as e:
            self.ok = False
            _warn(f"run folder {self.run_dir} not updated ({e.strerror or e}); every case is in the store "
                  f"and the folder is rewritten when the run ends")


_stop = {"finishing": False}  # set while a run is finished: a second signal must not cut that short


def _execute(store: Store, run_id: str, spec: specmod.RunSpec, planned: list, out: Path,
             done: set[str]) -> Outcome:
    """Run the planned cases; the run ends complete / partial (exit 0 / 1), interrupted (Ctrl-C,
    SIGTERM, SIGHUP: 130) or failed (an error of the parent itself, e.g. the store unwritable past
    the retries: 1). Every way out stores the run's status and writes its folder, and the last two
    print the one line that resumes it."""
    run_dir = out / run_id
    store_arg = "" if store.url == store_url(out) else f" --store {store.url}"
    hint = f"continue with `edgebench run --resume {run_id} --out {out}{store_arg}`"
    slots: list[dict[str, Any]] = []
    t0 = time.monotonic()
    overhead = lambda: {"overhead": overhead_summary(slots, time.monotonic() - t0)}  # noqa: E731
    folder = _Folder(store, run_id, run_dir, {i for i, (_, c) in enumerate(planned) if c.key() not in done}, overhead)
    restore = _stop_on_signals()
    status, code = "interrupted", EXIT_INTERRUPTED
    try:
        with make_progress(console) as p:
            events = ProgressEvents(p, [c for _, c in planned], spec.processes)
            counts = runner.run_cases(store, run_id, planned, run_dir, events, done, _between(spec),
                                      _precheck(store.get_run(run_id).env.get("device_memory_bytes")),
                                      saved=folder.saved, processes=spec.processes, overhead=slots,
                                      max_processes=spec.max_processes)
        status = "complete" if counts.get("failed", 0) == 0 else "partial"
        code = EXIT_OK if status == "complete" else EXIT_FAILED
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: finished cases are stored; {escape(hint)}", soft_wrap=True)
    except Exception as e:  # the parent's own failure: one line, never a traceback
        status, code = "failed", EXIT_FAILED
        console.print(f"[red]run failed:[/red] {escape(_one_line(e))}; finished cases are stored; {escape(hint)}",
                      soft_wrap=True)
    finally:
        _stop["finishing"] = True
        try:
            final = overhead()  # the same figures in run.json and on the terminal's last line
            rows = _finish(store, run_id, run_dir, status, lambda: final)
        finally:
            _stop["finishing"] = False
            restore()
    if code == EXIT_INTERRUPTED or status == "failed":
        return Outcome(code, store, run_id, run_dir, failed=status == "failed")
    return Outcome(code, store, run_id, run_dir, rows, time.monotonic() - t0, overhead=final["overhead"])


def _finish(store: Store, run_id: str, run_dir: Path, status: str, extra=lambda: {}) -> list[dict[str, Any]]:
    """Store the run's status and write its whole folder from the store; returns the summary rows
    ([] when either could not be done: a warning says so, the measured cases stay in the store)."""
    try:
        runner.with_retry(store.finish_run, run_id, status)
    except Exception as e:
        _warn(f"the run's status was not stored ({_one_line(e)}); it shows as abandoned and resumes")
        return []
    try:
        return export_run(store, run_id, run_dir, extra())
    except Exception as e:  # a full disk, an unreadable store: the cases are stored all the same
        _warn(f"run folder {run_dir} not written ({_one_line(e)}); every case is in the store")
        return []


def _stop_on_signals():
    """SIGINT, SIGTERM (a CI job's timeout, `kill`) and SIGHUP (a closed SSH session) stop a run
    alike: the case in flight is killed, finished cases are kept. While the run is being finished
    they are ignored, so a second Ctrl-C cannot leave the folder half written. Returns a function
    that puts the previous handlers back."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        if not _stop["finishing"]:
            raise KeyboardInterrupt

    sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    old = {s: signal.signal(s, handler) for s in sigs}
    return lambda: [signal.signal(s, h) for s, h in old.items()]
