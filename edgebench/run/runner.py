"""Runs cases, one worker subprocess each, and stores every result as it arrives.

A crash (signal), an out-of-memory kill, a timeout or a Python error in a case becomes that case's
status/error and the sweep goes on; so does a crash while a preset's model is built, since the
worker builds it. The store is committed case by case; Ctrl-C kills the case in flight and keeps
everything finished.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from edgebench.models.cache import file_sha256
from edgebench.records import Case, Sample
from edgebench.run import protocol as msg
from edgebench.run.plan import ModelRef
from edgebench.run.processes import ProcessLoop, close, merge, upcoming
from edgebench.store.database import Store

Ready = Callable[[Case], str | None]


class Events(Protocol):
    """What the runner tells its caller (the CLI draws progress bars from these)."""

    def schedule(self, slots: list[int]) -> None: ...  # the worker slots known to come (it may grow)
    def case_start(self, i: int, n: int, case: Case) -> None: ...
    def progress(self, i: int, progress: msg.Progress) -> None: ...
    def case_measured(self, i: int, case: Case, status: str, spent: dict[str, float]) -> None: ...
    def case_end(self, i: int, status: str, error: str) -> None: ...


class NullEvents:
    def schedule(self, slots): ...
    def case_start(self, i, n, case): ...
    def progress(self, i, progress): ...
    def case_measured(self, i, case, status, spent): ...
    def case_end(self, i, status, error): ...


@dataclass
class CaseResult:
    status: str = "ok"
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    model: str = ""  # the model file measured: the case's own, or the one a build reported
    # Seconds the parent saw the harness spend: "startup_s" (worker start + imports, to its first
    # message), "exit_s" (its last message to its exit). The worker's own parts are in info["overhead"].
    overhead: dict[str, float] = field(default_factory=dict)


# A store write that fails for a passing reason (another writer holds the lock past the busy
# timeout, the disk is full for a moment) is tried again, waiting 0.5, 1, 2 ... s, up to
# STORE_RETRY_S in all; then the error is raised and the session marks the run failed.
STORE_RETRY_S = 120.0
_TRANSIENT = ("locked", "busy", "disk is full", "disk i/o error", "could not serialize", "deadlock",
              "server closed the connection", "connection refused")


def with_retry(write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``write(*args, **kwargs)``, tried again with backoff while it fails with a transient store
    error (the list above); any other error, or the last one, is raised. Blocks."""
    import sqlalchemy as sa

    deadline, wait = time.monotonic() + STORE_RETRY_S, 0.5
    while True:
        try:
            return write(*args, **kwargs)
        except (sa.exc.OperationalError, sa.exc.DBAPIError) as e:
            if not any(t in str(e.orig or e).lower() for t in _TRANSIENT) or time.monotonic() + wait > deadline:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 8.0)


def _signal_reason(rc: int) -> str:
    sig = -rc
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    if sig == signal.SIGKILL:
        return f"worker killed by {name} (out of memory? see dmesg)"
    return f"worker crashed with {name}"


# Lines of a case log that name why a worker failed, best first: llama.cpp's assert (its abort
# prints a debugger backtrace after it, whose tail names nothing), then an allocation failure
# (llama.cpp says "failed to allocate" / "unable to allocate" before its generic "failed to load
# model"), then Python's MemoryError.
_CAUSES = (re.compile(r"GGML_ASSERT\(.*\) failed|GGML_ABORT|ggml_abort"),
           re.compile(r"(failed|unable|cannot|could not) (to )?allocate|out of memory|bad_alloc|"
                      r"Cannot allocate memory|MemoryError", re.IGNORECASE))
_BACKTRACE = re.compile(r"^(#\d+\s|\[New LWP|\[Thread |\[Inferior|0x[0-9a-f]+ in |Traceback|File \")")


def _log_lines(path: Path) -> list[str]:
    try:
        return [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return []


def _cause(lines: list[str]) -> str:
    """The first log line that names the cause of a failure (see _CAUSES), or ""."""
    for pattern in _CAUSES:
        for line in lines:
            if pattern.search(line):
                return msg.clip(line)
    return ""


def _tail(lines: list[str], n: int = 3) -> str:
    """The last ``n`` log lines that are not a backtrace's frames, clipped."""
    return msg.clip(" | ".join([l for l in lines if not _BACKTRACE.match(l)][-n:]))


def _explain(error: str, log_path: Path) -> str:
    """A failed case's error with the log line naming its cause in front, when the error does not
    quote it already (llama.cpp's "failed to load model" hides "unable to allocate ...")."""
    cause = _cause(_log_lines(log_path))
    said = error.split(": ", 1)[-1][:200]  # the message without its type: the traceback's last line repeats it
    if cause and cause not in error and said not in cause:
        return msg.clip(f"{cause} ({error})" if error else cause)
    return msg.clip(error)


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
    t_spawn, t_end = time.monotonic(), None
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgebench.run.worker", str(write_fd), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=log, stderr=log, pass_fds=(write_fd,),
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops the worker itself
        )
        os.close(write_fd)
        deadline: float | None = None

        def send(*messages: msg.Message, close: bool = False) -> None:
            """Write to the worker; ``close`` ends its input ("do not measure"). After Go the input
            stays open until the worker exits: the worker watches it and dies when it reads end of
            input, so a parent killed by SIGKILL leaves no worker decoding on (worker.py)."""
            try:
                proc.stdin.write(b"".join(m.to_json().encode() + b"\n" for m in messages))
                proc.stdin.flush()
                if close:
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
                    res.overhead.setdefault("startup_s", time.monotonic() - t_spawn)
                    if isinstance(m, msg.Built):
                        res.model = m.model
                        reason = ready(replace(case, model=m.model)) if ready is not None else None
                        if reason:  # no Go: the worker exits without loading the model
                            res.status, res.error = "skipped", reason
                            send(close=True)
                        else:
                            deadline = go()
                    got_end |= _handle(m, res)
                    if got_end and t_end is None:
                        t_end = time.monotonic()
                    on_msg(m)
        except BaseException:
            _kill(proc)
            raise
        finally:
            sel.close()
            os.close(read_fd)
        rc = proc.wait()
        if t_end is not None:
            res.overhead["exit_s"] = time.monotonic() - t_end
        try:
            proc.stdin.close()
        except OSError:
            pass
    if res.status == "ok" and (rc != 0 or not got_end):
        lines = _log_lines(log_path)
        tail = _cause(lines) or _tail(lines)
        res.status = "failed"
        if rc < 0:
            res.error = _signal_reason(rc) + (f": {tail}" if tail else "")
        else:
            res.error = res.error or f"worker exited with code {rc}: {tail}"
        if not res.model:  # a preset case whose build never finished
            res.error = f"could not build {case.build_label}: {res.error}"
    elif res.status == "failed":
        res.error = _explain(res.error, log_path)
    res.error = msg.clip(res.error)
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
    fit check, the model's hash (never while a worker measures; once per case, ``sha256`` given
    for a case's later processes), the cooldown. Their seconds go to ``spent``."""

    precheck: Callable[[Case], str | None] | None
    between: Callable[[], None] | None
    sha256: str = ""
    unreadable: bool = False  # the model file could not be hashed: the case failed (not skipped)
    spent: dict[str, float] = field(default_factory=dict)

    def __call__(self, case: Case) -> str | None:
        problem = self.precheck(case) if self.precheck else None
        if problem:
            return problem
        t = time.monotonic()
        try:
            self.sha256 = self.sha256 or file_sha256(case.model)
        except OSError as e:  # removed or unreadable since the plan: this case fails, the sweep goes on
            self.unreadable = True
            return msg.clip(f"model file {case.model} cannot be read: {e.strerror or e}")
        self.spent["hash_s"] = time.monotonic() - t
        if self.between is not None:
            t = time.monotonic()
            self.between()
            self.spent["cooldown_s"] = time.monotonic() - t
        return None


def run_cases(store: Store, run_id: str, planned: list[tuple[ModelRef, Case]], run_dir: Path,
              events: Events = NullEvents(), done_keys: set[str] = frozenset(),
              between: Callable[[], None] | None = None,
              precheck: Callable[[Case], str | None] | None = None,
              saved: Callable[[int, Case, list[Sample]], None] | None = None,
              processes: int = 1, overhead: list[dict[str, Any]] | None = None,
              max_processes: int = 0) -> dict[str, int]:
    """Run every planned case not already done (by Case.key()); returns counts by status.
    ``precheck`` returns a reason not to start a case (e.g. it cannot fit the device); such a case
    is stored as skipped. ``between`` (a cooldown) runs before every worker but the first.
    ``saved(case_id, case, samples)`` runs after each case is in the store (the run folder's update).

    ``processes`` N > 1 (pyperf's answer to between-process variance): each case runs in N worker
    processes, interleaved in rounds (case 1 process 1, case 2 process 1, ..., case 1 process 2, ...),
    and is stored once, as one case, after its last process (run/processes.py: fixed -r splits the
    reps; under -r auto a case whose interval over processes is not within its target gets one more
    process a round, up to ``max_processes``, 0: the default). Events count worker slots (slot =
    k * len(planned) + i; ``events.schedule`` gets the slots known to come, which grow when a case
    asks for another process). A case whose process fails is stored with what it had, as failed,
    and runs no more processes. Quality passes and intrusive profilers run in the first process only.

    ``overhead`` receives one dict per worker slot: seconds the harness spent outside the timed reps
    (the parent's and the worker's parts), the timed seconds and the slot's wall seconds."""
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    n = len(planned)
    acc: dict[int, CaseResult] = {}
    finished: set[int] = set()
    cases = [c for _, c in planned]
    loops = [ProcessLoop.of(c, processes, max_processes) for c in cases]
    sha: dict[int, str] = {}
    runs, k = 0, 0  # worker slots run so far; the round (process number) in flight
    while todo := [i for i in range(n) if i not in finished and loops[i].will_run(k)]:
        for i in todo:
            slot, case, loop = k * n + i, cases[i], loops[i]
            t0, started = time.monotonic(), time.time()
            part = loop.part(case, k)
            rest = upcoming(loops, finished, slot)
            events.schedule(rest)
            events.case_start(slot, runs + 1 + len(rest), part)
            runs += 1
            if case.key() in done_keys:
                counts["skipped"] += 1
                finished.add(i)
                events.case_end(slot, "skipped", "already measured (resume)")
                continue
            ready = _Ready(precheck, between if slot > 0 else None, sha.get(i, ""))

            def on_msg(m: msg.Message, slot: int = slot) -> None:
                if isinstance(m, msg.Progress):
                    events.progress(slot, m)

            log = f"case-{i:03d}.log" if processes == 1 else f"case-{i:03d}-p{k}.log"
            res = run_worker(part, run_dir / "logs" / log, on_msg, ready)
            if ready.unreadable:
                res.status = "failed"
            if res.model:  # a preset or requantized case is stored with the file it was built into
                cases[i] = case = replace(case, model=res.model)
            sha[i] = ready.sha256 or sha.get(i, "")
            spent = res.overhead | ready.spent | dict(res.info.get("overhead") or {})
            res.info["overhead"] = spent
            last = True
            if loop.split:
                res = acc[i] = merge(acc.get(i), res, k)
                last = loop.finished(res, spent.get("timed_s", 0.0) + spent.get("reps_untimed_s", 0.0),
                                     case.n_prompt, case.n_gen)
            if last:
                finished.add(i)
                close(res, loop)
                if sha[i]:
                    res.info.setdefault("model", {})["model_sha256"] = sha[i]
                # The measured case is saved before anything else that could fail (the run folder, printing).
                t = time.monotonic()
                with_retry(store.save_case, run_id, i, case, res.status, res.error, res.info, res.samples, started, time.time())
                spent["store_s"] = time.monotonic() - t
                counts[res.status] = counts.get(res.status, 0) + 1
                if saved is not None:
                    t = time.monotonic()
                    saved(i, case, res.samples)
                    spent["folder_s"] = time.monotonic() - t
            spent["wall_s"] = time.monotonic() - t0
            if overhead is not None:
                overhead.append({"case_id": i, "process": k} | spent)
            events.schedule(upcoming(loops, finished, slot))  # another process asked for: the bar grows
            events.case_measured(slot, part, res.status, spent)
            events.case_end(slot, res.status, res.error)
        k += 1
    return counts
