"""Presets are built in the case's worker: a crash while building fails that case only, the built
file comes back to the runner (stored model path and hash), and resume knows a preset case by its
preset and quant before anything is built."""

import json

import pytest

from edgebench.records import Case
from edgebench.run import protocol
from edgebench.run.plan import ModelRef
from edgebench.run.runner import NullEvents, run_cases
from edgebench.run.worker import BUILD_SIGNAL_ENV
from edgebench.store.database import Store

SMALL = {"n_prompt": 8, "n_gen": 2, "reps": 1}


def fake_model(tmp_path, name="m"):
    p = tmp_path / f"{name}.fake"
    p.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200}))
    return str(p)


def preset_case(backend="fake", quant="F16"):
    return (ModelRef(backend, preset="tiny", quant=quant),
            Case(backend=backend, model="", preset="tiny", quant_request=quant, **SMALL))


def file_case(path):
    return ModelRef("fake", path=path), Case(backend="fake", model=path, **SMALL)


@pytest.mark.parametrize("sig,reason", [("SIGSEGV", "worker crashed with SIGSEGV"),
                                        ("SIGKILL", "worker killed by SIGKILL")])
def test_a_crash_while_building_fails_that_case_and_the_sweep_goes_on(tmp_path, monkeypatch, sig, reason):
    monkeypatch.setenv(BUILD_SIGNAL_ENV, sig)
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    counts = run_cases(store, "r", [preset_case(), file_case(fake_model(tmp_path))], tmp_path / "r")
    assert counts == {"ok": 1, "failed": 1, "skipped": 0}
    built, measured = store.get_cases("r")
    assert built["status"] == "failed" and built["model"] == "" and built["preset"] == "tiny"
    assert built["error"].startswith(f"could not build tiny F16: {reason}")
    assert measured["status"] == "ok" and len(measured["info"]["model"]["model_sha256"]) == 64


def test_a_build_error_is_that_cases_reason(tmp_path):
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    counts = run_cases(store, "r", [preset_case(), file_case(fake_model(tmp_path))], tmp_path / "r")
    assert counts == {"ok": 1, "failed": 1, "skipped": 0}
    err = store.get_cases("r")[0]["error"]
    assert err == "could not build tiny F16: NotImplementedError: fake cannot build synthetic models"


def test_preset_key_is_preset_and_quant_not_the_built_path():
    _, planned = preset_case()
    built = Case.from_dict(planned.to_dict() | {"model": "/cache/models/tiny-F16.gguf"})
    assert planned.key() == built.key()
    assert planned.key() != Case.from_dict(planned.to_dict() | {"quant_request": "Q8_0"}).key()
    # a file case keeps its path in its key
    assert Case(backend="fake", model="a.fake").key() != Case(backend="fake", model="b.fake").key()


def test_protocol_lines_round_trip():
    from edgebench.records import Sample

    for m in (protocol.Start(Case(backend="fake", model="m.fake", profile=("ops",))), protocol.Go(),
              protocol.Progress("profile", 1, 3, profiler="ops"), protocol.Built("/x/tiny-F16.gguf"),
              protocol.Info({"model": {"quant": "F16"}}), protocol.Samples((Sample(0, "decode", "decode_step_ns", 5.0, idx=1),)),
              protocol.Done(), protocol.Error("RuntimeError: boom")):
        line = m.to_json()
        assert "\n" not in line and protocol.from_json(line) == m
    with pytest.raises(ValueError, match="not a worker protocol message"):
        protocol.from_json('{"t": "nonsense"}')


def test_preset_is_built_by_the_worker_stored_with_its_file_and_resumed_by_key(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    from edgebench.models.cache import file_sha256

    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path / "home"))  # an empty cache: really built
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    planned = [preset_case("llama-cpp", "Q8_0")]
    stages = []

    class Events(NullEvents):
        def progress(self, i, msg): stages.append(msg.stage)

    counts = run_cases(store, "r", planned, tmp_path / "r", Events())
    assert counts["ok"] == 1, store.get_cases("r")[0]["error"]
    (stored,) = store.get_cases("r")
    path = tmp_path / "home" / "models" / "tiny-Q8_0.gguf"
    assert stored["model"] == str(path) and stored["info"]["model"]["model_sha256"] == file_sha256(path)
    assert stored["info"]["model"]["quant"] == "Q8_0"
    assert stored["case_key"] == planned[0][1].key()
    assert "build" in stages and stages[-1] == "rep"
    counts = run_cases(store, "r", planned, tmp_path / "r", done_keys={stored["case_key"]})
    assert counts == {"ok": 0, "failed": 0, "skipped": 1}


def test_a_built_preset_that_cannot_fit_is_skipped_before_it_loads(tmp_path, tiny_gguf, model_cache, monkeypatch):
    pytest.importorskip("llama_cpp")
    monkeypatch.setenv("EDGEBENCH_HOME", str(model_cache))  # tiny_gguf's cache: found, not built
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    counts = run_cases(store, "r", [preset_case("llama-cpp", "Q4_K_M")], tmp_path / "r",
                       precheck=lambda c: f"{c.model} does not fit")
    assert counts == {"ok": 0, "failed": 0, "skipped": 1}
    (stored,) = store.get_cases("r")
    assert stored["status"] == "skipped" and stored["error"] == f"{tiny_gguf['Q4_K_M']} does not fit"
    assert stored["model"] == str(tiny_gguf["Q4_K_M"])


def test_cli_preset_run_and_resume_of_a_run_stored_with_path_keys(tmp_path, monkeypatch, capsys):
    pytest.importorskip("llama_cpp")

    from edgebench.cli import main
    from edgebench.store import database

    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    code = main(["run", "-m", "tiny", "-q", "Q4_0", "--backend", "llama-cpp", "-p", "8", "-n", "2", "-r", "1",
                 "-o", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    store = Store(out, create=False)
    (run,) = store.list_runs()
    (c,) = store.get_cases(run.run_id)
    assert c["status"] == "ok" and c["model"].endswith("tiny-Q4_0.gguf")
    assert run.spec["backends"] == ["llama-cpp"]
    # as an edgebench that keyed preset cases by their built path stored it, and interrupted
    old_key = json.dumps({k: v for k, v in Case.from_dict(c).to_dict().items() if k != "timeout_s"}, sort_keys=True)
    with store.engine.begin() as con:
        con.execute(database.cases.update().values(case_key=old_key))
        con.execute(database.runs.update().values(status="interrupted"))
    assert store.get_cases(run.run_id)[0]["case_key"] != Case.from_dict(c).key()
    capsys.readouterr()
    code = main(["run", "--resume", run.run_id, "-o", str(out), "--no-report"])
    assert code == 0
    assert "1 of 1 case(s) already measured" in capsys.readouterr().err
    (again,) = store.get_cases(run.run_id)
    assert again["started_at"] == c["started_at"]  # not measured again
    assert store.get_run(run.run_id).status == "complete"


_BUILD_MEMORY = """if True:
    import json
    import sys
    import numpy as np
    from edgebench.records import Case
    from edgebench.run import build as b
    from edgebench.profilers.memory import vm_hwm_bytes

    def hungry(case, emit):  # a build that holds 400 MB, as a quantizer's buffers do
        x = np.ones(400 * 2**20 // 8)
        return "/built/model-%d.gguf" % int(x[:10].sum())

    b._build_here = hungry
    case = Case(backend="llama-cpp", model="", preset="tiny", quant_request="F16", n_prompt=8, n_gen=2)
    got = []
    if sys.argv[1] == "child":
        path = b.build(case, got.append).model
    else:
        path = hungry(case, got.append)
    print(json.dumps({"path": path, "emitted": [type(m).__name__ for m in got], "hwm": vm_hwm_bytes()}))
"""


@pytest.mark.parametrize("where", ["child", "in-process"])
def test_a_build_never_counts_in_the_measuring_process_memory(where):
    """The build runs in a forked child: the worker's peak RSS (VmHWM, what the memory profiler
    reports) does not hold the build's memory. In-process, the same build raises it past 400 MB."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _BUILD_MEMORY, where], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["path"] == "/built/model-10.gguf"
    if where == "child":
        assert got["emitted"] == ["Built"] and got["hwm"] < 300 * 2**20, got
    else:
        assert got["hwm"] > 400 * 2**20, got


def test_a_build_error_in_the_child_is_the_cases_reason():
    from edgebench.run import build as b

    case = Case(backend="fake", model="", preset="tiny", quant_request="F16", **SMALL)
    with pytest.raises(b.BuildError, match="could not build tiny F16: NotImplementedError: fake cannot build"):
        b.build(case, lambda m: None)
