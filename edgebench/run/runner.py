"""Runs cases, one worker subprocess each, and stores every result as it arrives.

A crash (signal), an out-of-memory kill, a timeout or a Python error in a case becomes that case's
status/error and the sweep goes on. The store is committed case by case; Ctrl-C kills the case in
flight and keeps everything finished.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from edgebench.models.cache import file_sha256
from edgebench.records import Case, Sample
from edgebench.run.plan import ModelRef
from edgebench.store.database import Store


class Events(Protocol):
    """What the runner tells its caller (the CLI draws progress bars from these)."""

    def case_start(self, i: int, n: int, case: Case) -> None: ...
    def progress(self, i: int, msg: dict) -> None: ...
    def case_end(self, i: int, status: str, error: str) -> None: ...
    def note(self, text: str) -> None: ...


class NullEvents:
    def case_start(self, i, n, case): ...
    def progress(self, i, msg): ...
    def case_end(self, i, status, error): ...
    def note(self, text): ...


@dataclass
class CaseResult:
    status: str = "ok"
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _signal_reason(rc: int) -> str:
    sig = -rc
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    if sig == signal.SIGKILL:
        return f"worker killed by {name} (out of memory? see dmesg)"
    return f"worker crashed with {name}"


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def run_worker(case: Case, log_path: Path, on_msg: Callable[[dict], None] = lambda m: None) -> CaseResult:
    """Run one case in a subprocess; never raises for the case's own failures."""
    res = CaseResult()
    read_fd, write_fd = os.pipe()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgebench.run.worker", str(write_fd)],
            stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(write_fd,),
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops the worker itself
        )
        os.close(write_fd)
        proc.stdin.write(json.dumps(case.to_dict()).encode())
        proc.stdin.close()
        deadline = time.monotonic() + case.timeout_s
        got_end = False
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(read_fd, selectors.EVENT_READ)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    _kill(proc)
                    res.status, res.error = "failed", f"timeout after {case.timeout_s:g} s"
                    break
                if not sel.select(timeout=min(left, 0.5)):
                    continue
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    got_end |= _handle(msg, res)
                    on_msg(msg)
        except BaseException:
            _kill(proc)
            raise
        finally:
            sel.close()
            os.close(read_fd)
        rc = proc.wait()
    if res.status == "ok" and (rc != 0 or not got_end):
        tail = _tail(log_path)
        res.status = "failed"
        if rc < 0:
            res.error = _signal_reason(rc) + (f": {tail}" if tail else "")
        else:
            res.error = res.error or f"worker exited with code {rc}: {tail}"
    return res


def _handle(msg: dict, res: CaseResult) -> bool:
    t = msg.get("t")
    if t == "info":
        for k, v in msg["info"].items():
            if isinstance(v, dict) and isinstance(res.info.get(k), dict):
                res.info[k].update(v)
            else:
                res.info[k] = v
    elif t == "samples":
        res.samples.extend(Sample(**s) for s in msg["samples"])
    elif t == "error":
        res.status, res.error = "failed", msg["error"]
        return True
    elif t == "done":
        return True
    return False


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def prepare(ref: ModelRef, case: Case, progress=None) -> Case:
    """Fill in the model path of a preset case, building the synthetic model if needed. Blocks."""
    if not ref.preset:
        return case
    from edgebench.backends import backend_class

    path = backend_class(ref.backend).build_synthetic(ref.preset, ref.quant, progress=progress)
    return replace(case, model=str(path))


def run_cases(store: Store, run_id: str, planned: list[tuple[ModelRef, Case]], run_dir: Path,
              events: Events = NullEvents(), done_keys: set[str] = frozenset(),
              between: Callable[[], None] | None = None,
              precheck: Callable[[Case], str | None] | None = None) -> dict[str, int]:
    """Run every planned case not already done; returns counts by status. ``precheck`` returns
    a reason not to start a case (e.g. it cannot fit the device); such a case is stored as skipped."""
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    n = len(planned)
    for i, (ref, case) in enumerate(planned):
        started = time.time()
        events.case_start(i, n, case)
        try:
            case = prepare(ref, case, progress=lambda done, total: events.progress(
                i, {"t": "progress", "stage": "build", "rep": done, "reps": total}))
        except Exception as e:  # a model that cannot be built fails its cases only
            res = CaseResult("failed", f"could not build {ref.preset} {ref.quant}: {type(e).__name__}: {e}".splitlines()[0])
        else:
            if case.key() in done_keys:
                counts["skipped"] += 1
                events.case_end(i, "skipped", "already measured (resume)")
                continue
            problem = precheck(case) if precheck else None
            if problem:
                res = CaseResult("skipped", problem)
                store.save_case(run_id, i, case, res.status, res.error, res.info, [], started, time.time())
                counts["skipped"] += 1
                events.case_end(i, "skipped", problem)
                continue
            if between is not None and i > 0:
                between()
            res = run_worker(case, run_dir / "logs" / f"case-{i:03d}.log", lambda m: events.progress(i, m))
            res.info.setdefault("model", {})["model_sha256"] = file_sha256(case.model)
        store.save_case(run_id, i, case, res.status, res.error, res.info, res.samples, started, time.time())
        counts[res.status] = counts.get(res.status, 0) + 1
        events.case_end(i, res.status, res.error)
    return counts
