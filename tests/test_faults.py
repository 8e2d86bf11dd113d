"""Fault injection: the fake backend's failure hooks and real signals, then resume. Every test
checks that no finished case is lost or stored twice and that the SQLite file is intact."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgebench.cli import main
from edgebench.records import Case
from edgebench.run import runner, session
from edgebench.run.plan import ModelRef
from edgebench.run.runner import run_cases
from edgebench.store import database
from edgebench.store.database import Store
from edgebench.store.liveness import shown_status

SMALL = ("--backend", "fake", "-r", "1", "--no-report", "--no-warmup")  # with -p and -n


def fake(tmp_path, name="m", **cfg) -> str:
    p = Path(tmp_path) / f"{name}.fake"
    p.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200, **cfg}))
    return str(p)


def case(model, **kw) -> Case:
    return Case(backend="fake", model=model, **({"n_prompt": 8, "n_gen": 4, "reps": 1, "warmup": False} | kw))


def integrity(db: Path) -> str:
    c = sqlite3.connect(db)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


def assert_once_each(store: Store, run_id: str, n: int) -> None:
    """n cases, ids 0..n-1, each stored once, every one ok, samples of no case twice."""
    cases = store.get_cases(run_id)
    assert [c["case_id"] for c in cases] == list(range(n))
    assert [c["status"] for c in cases] == ["ok"] * n, [c["error"] for c in cases]
    s = store.get_samples(run_id)
    assert not s.duplicated(["case_id", "rep", "phase", "metric", "idx", "label"]).any()
    assert sorted(s[s.metric == "load_ns"].case_id) == list(range(n))


# -- the worker's faults: that case fails, the sweep goes on, resume measures it --------------------
WORKER_FAULTS = {
    "SIGKILL mid-decode": (dict(fail="oom", fail_at="decode"), {}, "worker killed by SIGKILL"),
    "SIGSEGV mid-decode": (dict(fail="crash", fail_at="decode"), {}, "worker crashed with SIGSEGV"),
    # the timeout counts from the worker's start: 3 s leaves the resumed case room on a loaded machine
    "hung past the timeout": (dict(fail="hang", fail_at="decode"), {"timeout_s": 3.0}, "timeout after 3 s"),
    "memory limit": (dict(alloc_mib=512), {}, "MemoryError"),  # under RLIMIT_AS, 64 MiB over the worker's own
}


@pytest.mark.parametrize("fault", list(WORKER_FAULTS))
def test_worker_fault_fails_its_case_only_and_resume_completes(tmp_path, monkeypatch, fault):
    cfg, kw, reason = WORKER_FAULTS[fault]
    if fault == "memory limit":
        monkeypatch.setenv("EDGEBENCH_TEST_RLIMIT_AS", str(64 * 2**20))
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    bad, good = fake(tmp_path, "bad", **cfg), fake(tmp_path, "good")
    planned = [(ModelRef("fake", path=good), case(good)), (ModelRef("fake", path=bad), case(bad, **kw)),
               (ModelRef("fake", path=good), case(good, n_prompt=16))]
    assert run_cases(store, "r", planned, tmp_path / "r") == {"ok": 2, "failed": 1, "skipped": 0}
    failed = store.get_cases("r")[1]
    assert failed["status"] == "failed" and reason in failed["error"]
    Path(bad).write_text(Path(good).read_text())  # the fault is gone: resume measures that case only
    done = {c["case_key"] for c in store.get_cases("r") if c["status"] == "ok"}
    assert run_cases(store, "r", planned, tmp_path / "r", done_keys=done) == {"ok": 1, "failed": 0, "skipped": 2}
    assert_once_each(store, "r", 3)
    assert integrity(tmp_path / "edgebench.db") == "ok"


# -- failure reasons: the cause line, capped -----------------------------------------------------------
def test_allocation_failure_stores_the_runtimes_cause_line(tmp_path):
    m = fake(tmp_path, fail="error", error_text="llama.cpp could not load m: llama_model_load_from_file_impl: failed to load model",
             stderr=["ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 2147483648",
                     "llama_model_load: error loading model: unable to allocate CPU buffer",
                     "llama_model_load_from_file_impl: failed to load model"])
    res = runner.run_worker(case(m), tmp_path / "log")
    assert res.status == "failed"
    assert res.error.startswith("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 2147483648")
    assert "failed to load model" in res.error  # the generic line follows, as context


def test_ggml_assert_abort_stores_the_assert_not_the_backtrace(tmp_path):
    m = fake(tmp_path, fail="abort", fail_at="prefill",
             stderr=["/src/ggml/src/ggml.c:2345: GGML_ASSERT(a->ne[2] == b->ne[0]) failed",
                     "[New LWP 4242]", "#0  0x00007f3a in __GI___wait4 (pid=4243) at wait4.c:30",
                     "#1  0x00007f3b in ggml_print_backtrace () from libggml-base.so",
                     "[Inferior 1 (process 4241) detached]"])
    res = runner.run_worker(case(m), tmp_path / "log")
    assert res.error == "worker crashed with SIGABRT: /src/ggml/src/ggml.c:2345: GGML_ASSERT(a->ne[2] == b->ne[0]) failed"


def test_error_lines_are_capped(tmp_path):
    text = f"bad tensor '{'x' * 70_000}'"  # a hostile GGUF's 64 KiB tensor name, quoted by the runtime
    res = runner.run_worker(case(fake(tmp_path, fail="error", error_text=text)), tmp_path / "log")
    assert res.status == "failed"
    assert len(res.error) < 500 and res.error.endswith(f"... ({len('RuntimeError: ' + text)} chars)")


# -- untrusted text is printed escaped -------------------------------------------------------------
def test_markup_in_model_names_and_errors_is_printed_as_text(tmp_path, capsys):
    (tmp_path / "[").mkdir()  # the path "[/]x.fake": a folder "[" holding "]x.fake"
    good, out = tmp_path / "[/]x.fake", tmp_path / "[/]out"
    good.write_text(json.dumps({"decode_us": 100}))
    bad = fake(tmp_path, "[bold]b", fail="error", error_text="tensor '[/]' [bold]not closed[/bold] [/x]")
    code = main(["run", "-m", str(good), "-m", bad, *SMALL, "-p", "8", "-n", "4", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err  # one case failed; no MarkupError ended the sweep
    assert "Traceback" not in err and "MarkupError" not in err
    assert "[bold]not closed[/bold] [/x]" in " ".join(err.split())
    assert "[/]out" in " ".join(err.split())
    store = Store(out, create=False)
    assert [c["status"] for c in store.get_cases(store.list_runs()[0].run_id)] == ["ok", "failed"]


# -- parent errors --------------------------------------------------------------------------------------
def test_model_removed_mid_sweep_fails_that_case_only(tmp_path):
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    a, b = fake(tmp_path, "a"), fake(tmp_path, "b")

    class RemoveB(runner.NullEvents):
        def case_end(self, i, status, error):
            if i == 0:
                os.unlink(b)

    planned = [(ModelRef("fake", path=m), case(m)) for m in (a, b, a)]
    assert run_cases(store, "r", planned, tmp_path / "r", RemoveB()) == {"ok": 2, "failed": 1, "skipped": 0}
    assert "cannot be read" in store.get_cases("r")[1]["error"]


def _short_busy_timeout(monkeypatch) -> None:
    """SQLite's busy timeout down to 100 ms (the store's is 10 s), so a locked store is met fast."""
    pragmas = database._sqlite_pragmas

    def short(conn, record):
        pragmas(conn, record)
        conn.execute("PRAGMA busy_timeout=100")

    monkeypatch.setattr(database, "_sqlite_pragmas", short)


class _Locker:
    """Another writer: a second connection holding BEGIN EXCLUSIVE until released."""

    def __init__(self, db: Path):
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


def test_store_locked_past_the_busy_timeout_is_retried(tmp_path, monkeypatch):
    _short_busy_timeout(monkeypatch)
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    locks = []

    class LockAtCase1(runner.NullEvents):
        def case_start(self, i, n, c):
            if i == 1:  # held 2 s: the case's save meets it, waits with backoff, then saves
                locks.append(_Locker(tmp_path / "edgebench.db"))
                threading.Timer(2.0, locks[0].release).start()

    m = fake(tmp_path)
    planned = [(ModelRef("fake", path=m), case(m, n_prompt=p)) for p in (8, 9, 10)]
    assert run_cases(store, "r", planned, tmp_path / "r", LockAtCase1()) == {"ok": 3, "failed": 0, "skipped": 0}
    assert locks and locks[0].conn is None
    assert_once_each(store, "r", 3)
    assert integrity(tmp_path / "edgebench.db") == "ok"


def test_store_locked_past_the_retries_fails_the_run_in_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    _short_busy_timeout(monkeypatch)
    monkeypatch.setattr(runner, "STORE_RETRY_S", 1.0)
    out = tmp_path / "out"
    locks = []
    start, finish = session.ProgressEvents.case_start, session._finish

    def case_start(self, i, n, c):
        start(self, i, n, c)
        if i == 1 and not locks:
            locks.append(_Locker(out / "edgebench.db"))

    def finish_after_release(*args):  # the other writer lets go once the run has given up
        locks[0].release()
        return finish(*args)

    monkeypatch.setattr(session.ProgressEvents, "case_start", case_start)
    monkeypatch.setattr(session, "_finish", finish_after_release)
    m = fake(tmp_path)
    code = main(["run", "-m", m, *SMALL, "-p", "8,9,10", "-n", "4", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [l for l in err.splitlines() if "run failed:" in l]
    assert "database is locked" in line and "--resume" in line
    store = Store(out, create=False)
    (run,) = store.list_runs()
    assert run.status == "failed" and [c["status"] for c in store.get_cases(run.run_id)] == ["ok"]
    monkeypatch.setattr(session, "_finish", finish)
    assert main(["run", "--resume", run.run_id, "-o", str(out), "--no-report"]) == 0
    assert_once_each(store, run.run_id, 3)
    assert integrity(out / "edgebench.db") == "ok"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (where this test may mount one: root on Linux), else skip."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def test_full_disk_then_space_freed_loses_nothing(small_disk, monkeypatch, capsys):
    """The store and the run folder on a disk that fills up during case 1 and is freed 2 s later:
    the store write retries, the folder is rewritten at the end."""
    out = small_disk / "out"
    start = session.ProgressEvents.case_start

    def case_start(self, i, n, c):
        start(self, i, n, c)
        if i == 1:
            filler = _fill(small_disk)
            threading.Timer(2.0, filler.unlink).start()

    monkeypatch.setattr(session.ProgressEvents, "case_start", case_start)
    m = fake(small_disk.parent)
    code = main(["run", "-m", m, *SMALL, "-p", "8", "-n", "400", "-t", "1,2,3", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    store = Store(out, create=False)
    (run,) = store.list_runs()
    assert run.status == "complete"
    assert_once_each(store, run.run_id, 3)
    samples_csv = (out / run.run_id / "samples.csv").read_text().splitlines()
    assert len(samples_csv) - 1 == len(store.get_samples(run.run_id))
    assert integrity(out / "edgebench.db") == "ok"


def test_run_folder_write_failure_is_a_warning_and_the_store_keeps_every_case(tmp_path, monkeypatch, capsys):
    def enospc(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session, "append_samples_csv", enospc)
    out = tmp_path / "out"
    code = main(["run", "-m", fake(tmp_path), *SMALL, "-p", "8,9", "-n", "4", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and "No space left on device" in err and "Traceback" not in err
    store = Store(out, create=False)
    (run,) = store.list_runs()
    assert_once_each(store, run.run_id, 2)
    assert len((out / run.run_id / "samples.csv").read_text().splitlines()) - 1 == len(store.get_samples(run.run_id))


# -- the parent killed mid-sweep ---------------------------------------------------------------------
def _workers_of(parent: int) -> list[int]:
    """Pids of worker processes started by ``parent`` (the worker's last argument is its parent's pid)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"edgebench.run.worker" in argv and argv[-2:-1] == [str(parent).encode()]:
                out.append(int(d.name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM])
def test_parent_killed_mid_sweep_kills_the_worker_and_resume_completes(tmp_path, capsys, sig):
    from test_cli import wait_for_stored_case

    out = tmp_path / "out"
    quick, slow, last = fake(tmp_path, "quick"), fake(tmp_path, "slow", decode_us=100_000), fake(tmp_path, "last")
    proc = subprocess.Popen([sys.executable, "-m", "edgebench.cli", "run", "-m", quick, "-m", slow, "-m", last,
                             *SMALL, "-p", "8", "-n", "40", "-o", str(out)],  # the slow case: ~4 s
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            start_new_session=True)
    wait_for_stored_case(out / "edgebench.db", proc)
    deadline = time.time() + 10
    while not _workers_of(proc.pid) and time.time() < deadline:  # case 1's worker
        time.sleep(0.05)
    workers = _workers_of(proc.pid)
    assert workers
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    deadline = time.time() + 5
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{w}").exists() and b"worker" in Path(f"/proc/{w}/cmdline").read_bytes()
                   for w in workers), "the worker outlived its parent"
    store = Store(out, create=False)
    (run,) = store.list_runs()
    if sig == signal.SIGKILL:
        assert run.status == "running" and shown_status(run) == "abandoned"
        assert main(["runs", "-o", str(out)]) == 0 and "abandoned" in capsys.readouterr().out
    else:
        assert proc.returncode == 130 and b"--resume" in err, err
        assert run.status == "interrupted"
    # the folder says what was finished, even after SIGKILL
    doc = json.loads((out / run.run_id / "run.json").read_text())
    assert [c["status"] for c in doc["cases"]] == ["ok"]
    rows = (out / run.run_id / "samples.csv").read_text().splitlines()
    assert len(rows) - 1 == len(store.get_samples(run.run_id)) > 0
    assert main(["run", "--resume", run.run_id, "-o", str(out), "--no-report"]) == 0
    assert store.get_run(run.run_id).status == "complete"
    assert_once_each(store, run.run_id, 3)
    assert integrity(out / "edgebench.db") == "ok"


def test_four_concurrent_runs_on_one_new_store(tmp_path):
    out = tmp_path / "out"
    m = fake(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "edgebench.cli", "run", "-m", m, *SMALL, "-p", "8,9", "-n", "4", "-o", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    errs = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    store = Store(out, create=False)
    runs = store.list_runs()
    assert len(runs) == 4
    for r in runs:
        assert r.status == "complete"
        assert_once_each(store, r.run_id, 2)
    assert integrity(out / "edgebench.db") == "ok"


# -- the parent's own memory -----------------------------------------------------------------------
def test_bandwidth_measurement_under_a_memory_limit_fails_soft():
    code = """if True:
        import resource
        mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        from edgebench.machine.environment import measure_memory_bandwidth
        mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 160 * 2**20, resource.RLIM_INFINITY))
        print(measure_memory_bandwidth())
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    gbs, why = eval(r.stdout)  # (None, reason) or a figure from arrays that fit
    assert (gbs is None and why.startswith("not measured")) or (gbs > 0 and why == "")


def test_real_llama_cpp_under_a_memory_limit_stores_its_cause_line(real_gguf, tmp_path, monkeypatch):
    """llama.cpp itself under RLIMIT_AS: at some limits it reports "failed to allocate buffer of size
    ..." before its generic "failed to initialize the context", at others GGML_ASSERT aborts; which
    one a limit gives depends on the machine, so each failure is checked against its own log."""
    from edgebench.run.runner import _cause, _log_lines

    explained = 0
    for mib in (220, 260, 300, 340):
        monkeypatch.setenv("EDGEBENCH_TEST_RLIMIT_AS", str(mib * 2**20))
        log = tmp_path / f"{mib}.log"
        res = runner.run_worker(Case(backend="llama-cpp", model=str(real_gguf), n_prompt=8, n_gen=2, reps=1,
                                     warmup=False, n_threads=1), log)
        cause = _cause(_log_lines(log))
        if res.status == "failed" and cause:
            explained += 1
            assert cause in res.error and len(res.error) < 500, (mib, res.error)
    assert explained, "no limit made llama.cpp fail for want of memory: change them"
