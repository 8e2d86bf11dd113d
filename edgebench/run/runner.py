"""Runs cases, one worker subprocess each, and stores every result as it arrives.

A crash (signal), an out-of-memory kill, a timeout or a Python error in a case becomes that case's
status/error and the sweep goes on; so does a crash while a preset's model is built, since the
worker builds it. The store is committed case by case; Ctrl-C kills the case in flight and keeps
everything finished.
"""

from __future__ import annotations

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
from edgebench.run import protocol as msg
from edgebench.run.plan import ModelRef
from edgebench.store.database import Store

Ready = Callable[[Case], str | None]


class Events(Protocol):
    """What the runner tells its caller (the CLI draws progress bars from these)."""

    def case_start(self, i: int, n: int, case: Case) -> None: ...
    def progress(self, i: int, progress: msg.Progress) -> None: ...
    def case_end(self, i: int, status: str, error: str) -> None: ...


class NullEvents:
    def case_start(self, i, n, case): ...
    def progress(self, i, progress): ...
    def case_end(self, i, status, error): ...


@dataclass
class CaseResult:
    status: str = "ok"
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    model: str = ""  # the model file measured: the case's own, or the one a build reported


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


def run_worker(case: Case, log_path: Path, on_msg: Callable[[msg.Message], None] = lambda m: None,
               ready: Ready | None = None) -> CaseResult:
    """Run one case in a subprocess; never raises for the case's own failures. Blocks.

    ``ready(case)`` is called once the model file is known: before the worker starts for a file,
    after the worker has built it for a preset (the worker waits meanwhile). It returns a reason
    not to measure (the case is then "skipped") or None. ``case.timeout_s`` counts from then: as
    when the runner built presets itself, a build is not limited by it."""
    if case.model and ready is not None:
        reason = ready(case)
        if reason:
            return CaseResult("skipped", reason, model=case.model)
    res = CaseResult(model=case.model)
    read_fd, write_fd = os.pipe()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgebench.run.worker", str(write_fd)],
            stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(write_fd,),
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops the worker itself
        )
        os.close(write_fd)
        deadline: float | None = None

        def send(*messages: msg.Message) -> None:
            """Write to the worker and close its input: it needs nothing more."""
            try:
                proc.stdin.write(b"".join(m.to_json().encode() + b"\n" for m in messages))
                proc.stdin.close()
            except OSError:  # it is gone already; its exit status tells why
                pass

        def go() -> float:
            """Tell the worker to measure; returns the case's deadline, which starts now."""
            send(msg.Go())
            return time.monotonic() + case.timeout_s

        proc.stdin.write(msg.Start(case).to_json().encode() + b"\n")
        if case.model:
            deadline = go()
        else:
            proc.stdin.flush()
        got_end = False
        buf = b""
        sel = selectors.DefaultSelector()
        sel.register(read_fd, selectors.EVENT_READ)
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    _kill(proc)
                    res.status, res.error = "failed", f"timeout after {case.timeout_s:g} s"
                    break
                if not sel.select(timeout=0.5 if left is None else min(left, 0.5)):
                    continue
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    m = msg.from_json(line)
                    if isinstance(m, msg.Built):
                        res.model = m.model
                        reason = ready(replace(case, model=m.model)) if ready is not None else None
                        if reason:  # no Go: the worker exits without loading the model
                            res.status, res.error = "skipped", reason
                            send()
                        else:
                            deadline = go()
                    got_end |= _handle(m, res)
                    on_msg(m)
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
        if not res.model:  # a preset case whose build never finished
            res.error = f"could not build {case.build_label}: {res.error}"
    return res


def _handle(m: msg.Message, res: CaseResult) -> bool:
    """Fold one message into the result; True at the worker's last message."""
    if isinstance(m, msg.Info):
        for k, v in m.info.items():
            if isinstance(v, dict) and isinstance(res.info.get(k), dict):
                res.info[k].update(v)
            else:
                res.info[k] = v
    elif isinstance(m, msg.Samples):
        res.samples.extend(m.samples)
    elif isinstance(m, msg.Error):
        res.status, res.error = "failed", m.error
        return True
    elif isinstance(m, msg.Done):
        return True
    return False


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


@dataclass
class _Ready:
    """What happens between "the model file is known" and "measure" (run_worker's ``ready``): the
    fit check, the model's hash (never while a worker measures), the cooldown."""

    precheck: Callable[[Case], str | None] | None
    between: Callable[[], None] | None
    sha256: str = ""

    def __call__(self, case: Case) -> str | None:
        problem = self.precheck(case) if self.precheck else None
        if problem:
            return problem
        self.sha256 = file_sha256(case.model)
        if self.between is not None:
            self.between()
        return None


def run_cases(store: Store, run_id: str, planned: list[tuple[ModelRef, Case]], run_dir: Path,
              events: Events = NullEvents(), done_keys: set[str] = frozenset(),
              between: Callable[[], None] | None = None,
              precheck: Callable[[Case], str | None] | None = None) -> dict[str, int]:
    """Run every planned case not already done (by Case.key()); returns counts by status.
    ``precheck`` returns a reason not to start a case (e.g. it cannot fit the device); such a case
    is stored as skipped. ``between`` (a cooldown) runs before every case but the first."""
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    n = len(planned)
    for i, (_ref, case) in enumerate(planned):
        started = time.time()
        events.case_start(i, n, case)
        if case.key() in done_keys:
            counts["skipped"] += 1
            events.case_end(i, "skipped", "already measured (resume)")
            continue
        ready = _Ready(precheck, between if i > 0 else None)

        def on_msg(m: msg.Message) -> None:
            if isinstance(m, msg.Progress):
                events.progress(i, m)

        res = run_worker(case, run_dir / "logs" / f"case-{i:03d}.log", on_msg, ready)
        if res.model:  # a preset or requantized case is stored with the file it was built into
            case = replace(case, model=res.model)
        if ready.sha256:
            res.info.setdefault("model", {})["model_sha256"] = ready.sha256
        store.save_case(run_id, i, case, res.status, res.error, res.info, res.samples, started, time.time())
        counts[res.status] = counts.get(res.status, 0) + 1
        events.case_end(i, res.status, res.error)
    return counts
