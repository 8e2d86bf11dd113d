"""The CLI in-process (edgebench.cli.main), and once as a real process for Ctrl-C."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgebench.cli import main


def fake(tmp_path, name="m", **cfg):
    p = tmp_path / f"{name}.fake"
    p.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200, **cfg}))
    return str(p)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


SMALL = ("--backend", "fake", "-p", "16", "-n", "4", "-r", "2", "--no-report")


def test_run_writes_store_and_run_folder(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "-m", fake(tmp_path), *SMALL, "-t", "1,2", "-o", out)
    assert code == 0, err
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert {"run.json", "summary.csv", "samples.csv"} <= {p.name for p in run_dir.iterdir()}
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["status"] == "complete" and len(doc["cases"]) == 2
    assert doc["environment"]["cpu_model"] and doc["spec"]["sweep"]["threads"] == [1, 2]
    header = (run_dir / "summary.csv").read_text().splitlines()[0].split(",")
    for col in ("run_id", "device", "backend", "model", "model_sha256", "synthetic", "quant", "bpw", "n_params",
                "model_bytes", "n_threads", "n_gpu_layers", "n_ctx", "n_prompt", "n_gen", "depth", "reps",
                "prefill_tok_s", "prefill_tok_s_std", "ttft_ms", "decode_tok_s", "decode_tok_s_std",
                "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99", "status", "error"):
        assert col in header
    samples = (run_dir / "samples.csv").read_text().splitlines()
    assert sum(",decode_step_ns," in l for l in samples) == 2 * 2 * 4  # cases x reps x n_gen

    code, out_json, _ = run_cli(capsys, "show", "latest", "--format", "json", "-o", out)
    rows = json.loads(out_json)
    assert code == 0 and [r["n_threads"] for r in rows] == [1, 2]
    for fmt in ("csv", "md", "table"):
        code, text, _ = run_cli(capsys, "show", "--format", fmt, "-o", out)
        assert code == 0 and "fake" in text or fmt == "table"
    code, text, _ = run_cli(capsys, "runs", "-o", out)
    assert code == 0


def test_failed_case_gives_exit_1_and_the_rest_is_measured(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "run", "-m", fake(tmp_path, "bad", fail="crash", fail_at="decode"),
                         "-m", fake(tmp_path, "good"), *SMALL, "-o", out)
    assert code == 1
    code, text, _ = run_cli(capsys, "show", "--format", "json", "-o", out)
    assert [r["status"] for r in json.loads(text)] == ["failed", "ok"]


def _bad_inputs(tmp_path):
    notgguf = tmp_path / "x.gguf"
    notgguf.write_text("hello, not a model")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    badtoml = tmp_path / "bad.toml"
    badtoml.write_text("threads = [1,\n")
    m = fake(tmp_path)
    return {
        "missing model": (["run", "-m", tmp_path / "nope.gguf"], "neither a file"),
        "not gguf": (["run", "-m", notgguf, "--no-report"], "not a GGUF"),
        "unknown option": (["run", "--frobnicate"], "No such option"),
        "bad int": (["run", "-m", m, "--backend", "fake", "-p", "12x"], "not a valid int"),
        "zero count": (["run", "-m", m, "--backend", "fake", "-p", "0", "-n", "0"], "-p 0 and -n 0 leave nothing to time"),
        "negative count": (["run", "-m", m, "--backend", "fake", "-n", "-1"], "n_gen must be >= 0"),
        "negative reps": (["run", "-m", m, "--backend", "fake", "-r", "0"], "--reps must be >= 1"),
        "bad pg": (["run", "-m", m, "--backend", "fake", "-pg", "512"], "-pg takes PROMPT,GEN"),
        "target ci without auto": (["run", "-m", m, "--backend", "fake", "--target-ci", "2%"], "--target-ci needs -r auto"),
        "bad processes": (["run", "-m", m, "--backend", "fake", "--processes", "0"], "--processes"),
        "ctx too small": (["run", "-m", m, "--backend", "fake", "-p", "512", "--ctx", "256"], "too small"),
        "bad flash attn": (["run", "-m", m, "--backend", "fake", "-fa", "sometimes"], "flash_attn must be"),
        "unknown backend": (["run", "-m", m, "--backend", "tensorflow"], "unknown backend"),
        "unknown quant": (["run", "-m", "smollm-135m", "-q", "Q9_9"], "unknown quant level"),
        "unknown preset": (["run", "-m", "gpt-5"], "neither a file"),
        "invalid config": (["run", "--config", badtoml], "not valid TOML"),
        "missing config": (["run", "--config", tmp_path / "none.toml"], "does not exist"),
        "unwritable out": (["run", "-m", m, "--backend", "fake", "-o", blocker / "sub"], "cannot be written"),
        "unknown run": (["show", "nosuchrun", "-o", tmp_path], "no results store"),
        "bad format": (["show", "--format", "xml", "-o", tmp_path], "--format must be one of"),
        "unknown profiler": (["run", "-m", m, "--backend", "fake", "--profile", "vibes"], "unknown profiler"),
    }


@pytest.mark.parametrize("name", [
    "missing model", "not gguf", "unknown option", "bad int", "zero count", "negative count", "negative reps", "ctx too small",
    "bad pg", "target ci without auto", "bad processes",
    "bad flash attn", "unknown backend", "unknown quant", "unknown preset", "invalid config", "missing config",
    "unwritable out", "unknown run", "bad format", "unknown profiler"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, name):
    args, expected = _bad_inputs(tmp_path)[name]
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgebench: error:"), err
    assert expected in lines[0]
    assert "Traceback" not in err


def wait_for_stored_case(db, proc, n: int = 1, timeout: float = 60) -> None:
    """Until ``n`` cases are committed, read through a read-only sqlite3 connection. (Polling with
    Store() made this test flaky: Store() creates the schema, and racing the run's own creation of
    it could fail the run with "table runs already exists" before the signal was sent.)"""
    import sqlite3

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                try:
                    if c.execute("SELECT count(*) FROM cases").fetchone()[0] >= n:
                        return
                finally:
                    c.close()
            except sqlite3.Error:  # not created yet
                pass
        time.sleep(0.1)
    raise AssertionError(f"no {n} stored case(s) (exit {proc.poll()}): {proc.stderr.read().decode() if proc.poll() is not None else ''}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_keeps_finished_cases_and_resume_finishes(tmp_path, sig):
    out = tmp_path / "out"
    quick = fake(tmp_path, "quick")
    slow = fake(tmp_path, "slow", decode_us=200_000)  # 8 steps x 2 reps: ~3 s
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "edgebench.cli", "run", "-m", quick, "-m", slow, "--backend", "fake",
                             "-p", "8", "-n", "8", "-r", "2", "-o", str(out), "--no-report"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            # a shell that started us in the background may ignore SIGINT; a terminal doesn't
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    from edgebench.store.database import Store
    wait_for_stored_case(out / "edgebench.db", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"--resume" in err
    store = Store(out, create=False)
    (run,) = store.list_runs()
    assert run.status == "interrupted"
    assert [c["status"] for c in store.get_cases(run.run_id)] == ["ok"]
    # resume measures only what is missing
    code = main(["run", "--resume", run.run_id, "-o", str(out), "--no-report"])
    assert code == 0
    cases = store.get_cases(run.run_id)
    assert [c["status"] for c in cases] == ["ok", "ok"]
    assert store.get_run(run.run_id).status == "complete"


def test_memory_projection_and_devices_commands(capsys, tiny_gguf):
    code, out, err = run_cli(capsys, "memory", tiny_gguf["F16"], "--ctx", "256,4096", "--cache-type", "f16,q8_0",
                             "--device", "jetson-orin")
    assert code == 0, err
    assert "jetson-orin-nx-16gb" in out and "4096" in out and "q8_0" in out
    code, out, _ = run_cli(capsys, "memory", "qwen2-0.5b", "--ctx", "131072", "-q", "Q4_K_M")
    assert code == 0 and "131072" in out and "nominal bpw" in out
    code, out, _ = run_cli(capsys, "devices", "detect")
    assert code == 0 and "generic-x86-64" in out
    code, out, _ = run_cli(capsys, "devices", "show", "jetson-orin")
    assert code == 0 and "102.4" in out and "sources" in out
    code, out, _ = run_cli(capsys, "devices", "list")
    assert code == 0 and "raspberry-pi-5" in out


@pytest.mark.parametrize("args,expected", [
    (["memory", "smollm-135m", "--ctx", "0"], "--ctx must list positive sizes"),
    (["memory", "smollm-135m", "--cache-type", "q3_x"], "unknown cache type"),
    (["memory", "nothing.bin"], "neither a .gguf file nor a preset"),
    (["devices", "show", "nope"], "unknown device"),
    (["run", "-m", "x.fake", "--device", "jetson-orin"], "this machine is not jetson-orin-nx-16gb: detected generic-x86-64"),
])
def test_more_bad_inputs(capsys, tmp_path, args, expected):
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_no_verify_runs_anyway_and_says_unverified(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "-m", fake(tmp_path), *SMALL, "--device", "jetson-orin", "--no-verify", "-o", out)
    assert code == 0 and "unverified" in err
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    env = json.loads((run_dir / "run.json").read_text())["environment"]
    assert env["device"] == "jetson-orin-nx-16gb" and env["device_verified"] is False


def test_run_bundle_ingests_into_another_store_idempotently(tmp_path, capsys):
    out = tmp_path / "device"
    assert run_cli(capsys, "run", "-m", fake(tmp_path), *SMALL, "-t", "1,2", "-o", out)[0] == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    fleet = tmp_path / "fleet"
    for _ in range(2):  # twice: the same result
        code, text, err = run_cli(capsys, "ingest", run_dir, "-o", fleet)
        assert code == 0, err
    _, a, _ = run_cli(capsys, "show", run_dir.name, "--format", "json", "-o", out)
    _, b, _ = run_cli(capsys, "show", run_dir.name, "--format", "json", "-o", fleet)
    assert json.loads(a) == json.loads(b)
    code, _, err = run_cli(capsys, "ingest", tmp_path, "-o", fleet)
    assert code == 2 and "is not a run folder" in err


def test_models_commands(tmp_path, capsys, tiny_gguf):
    code, out, _ = run_cli(capsys, "models", "list")
    assert code == 0 and "qwen2.5-1.5b" in out and "gemma2" in out
    code, out, _ = run_cli(capsys, "models", "inspect", tiny_gguf["Q4_K_M"])
    assert code == 0 and "Q4_K_M" in out and "ffn_down" in out
    code, out, err = run_cli(capsys, "models", "make", "tiny", "--quant", "Q4_0,Q6_K", "--out", tmp_path / "m")
    assert code == 0, err
    # DIR itself holds exactly the levels asked for (the F16 they came from and the locks stay in the cache)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["tiny-Q4_0.gguf", "tiny-Q6_K.gguf"]
    assert out.splitlines() == [str(tmp_path / "m" / "tiny-Q4_0.gguf"), str(tmp_path / "m" / "tiny-Q6_K.gguf")]
    from edgebench.models.gguf_file import read_gguf_info

    assert read_gguf_info(tmp_path / "m" / "tiny-Q6_K.gguf").quant == "Q6_K"
    code, again, _ = run_cli(capsys, "models", "make", "tiny", "--quant", "Q6_K", "--out", tmp_path / "m")
    assert code == 0 and again.splitlines() == [str(tmp_path / "m" / "tiny-Q6_K.gguf")]  # reused, replaced whole
    code, _, err = run_cli(capsys, "models", "make", "tiny", "--quant", "Q7_X")
    assert code == 2 and "unknown quant level" in err


def test_truncated_gguf_is_refused_before_running(tmp_path, capsys, tiny_gguf):
    data = tiny_gguf["Q8_0"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "run", "-m", cut, "-o", tmp_path / "o")
    assert code == 2 and "cut.gguf" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing run, nothing written


def test_folder_of_gguf_models_runs_each(tmp_path, capsys, tiny_gguf):
    import shutil

    folder = tmp_path / "models"
    folder.mkdir()
    for q in ("Q8_0", "Q4_K_M", "F16"):  # alphabetically F16, Q4_K_M, Q8_0
        shutil.copy(tiny_gguf[q], folder / f"m-{q}.gguf")
    code, _, err = run_cli(capsys, "run", "-m", folder, "-p", "16", "-n", "2", "-r", "1", "-o", tmp_path / "o", "--no-report")
    assert code == 0, err
    _, text, _ = run_cli(capsys, "show", "--format", "json", "-o", tmp_path / "o")
    # read from the files, and run in ladder order: bits per weight high to low
    assert [r["quant"] for r in json.loads(text)] == ["F16", "Q8_0", "Q4_K_M"]


def test_bad_graph_opt_and_old_store(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "-m", fake(tmp_path), "--backend", "fake", "--graph-opt", "max")
    assert code == 2 and "graph_opt must be one of" in err
    import sqlite3

    old = tmp_path / "old"
    old.mkdir()
    con = sqlite3.connect(old / "edgebench.db")
    con.execute("CREATE TABLE cases (run_id TEXT, case_id INTEGER)")
    con.commit()
    con.close()
    code, _, err = run_cli(capsys, "runs", "-o", old)
    assert code == 2 and "older edgebench" in err


def _run_rows(capsys, out, *args):
    code, _, err = run_cli(capsys, "run", *args, "-o", out)
    assert code == 0, err
    code, text, _ = run_cli(capsys, "show", "--format", "json", "-o", out)
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    with (run_dir / "samples.csv").open() as f:
        metrics = {r["metric"] for r in csv.DictReader(f)}
    return json.loads(text), metrics


def test_llama_bench_habits_repeated_flags_and_fa_1(tmp_path, capsys):
    m = fake(tmp_path)
    rows, _ = _run_rows(capsys, tmp_path / "o", "-m", m, "--backend", "fake", "-p", "64", "-p", "128", "-n", "2",
                        "-r", "1", "-fa", "1", "--no-report")
    assert sorted(r["n_prompt"] for r in rows) == [64, 128] and {r["flash_attn"] for r in rows} == {"on"}


def test_generation_only_and_prompt_only(tmp_path, capsys):
    m = fake(tmp_path)
    (gen,), metrics = _run_rows(capsys, tmp_path / "g", "-m", m, "--backend", "fake", "-p", "0", "-n", "4", "-r", "2",
                                "-fa", "0", "--no-report")
    assert gen["flash_attn"] == "off" and "decode_step_ns" in metrics and "prefill_ns" not in metrics
    assert gen["prefill_tok_s"] is None and gen["ttft_ms"] is None and gen["decode_tok_s"] > 0
    (pre,), metrics = _run_rows(capsys, tmp_path / "p", "-m", m, "--backend", "fake", "-p", "16", "-n", "0", "-r", "2",
                                "--no-report")
    assert "prefill_ns" in metrics and "decode_step_ns" not in metrics
    assert pre["prefill_tok_s"] > 0 and pre["decode_tok_s"] is None and pre["tpot_ms_p50"] is None


def test_settings_llama_cpp_refuses_start_no_worker(tmp_path, capsys, tiny_gguf):
    """A quantized V cache without flash attention: llama.cpp refuses the context. Alone it is bad
    input (exit 2, one line, nothing stored); in a sweep that case is skipped with the reason before
    any worker starts, and the rest runs."""
    out = tmp_path / "out"
    m = tiny_gguf["Q4_K_M"]
    code, _, err = run_cli(capsys, "run", "-m", m, "-p", "8", "-n", "2", "-r", "1", "-ctv", "q8_0", "-fa", "off",
                           "-o", out, "--no-report")
    assert code == 2 and err.count("\n") == 1 and "quantized V cache" in err and "Traceback" not in err, err
    assert not (out / "edgebench.db").exists()
    code, _, err = run_cli(capsys, "run", "-m", m, "-p", "8", "-n", "2", "-r", "1", "-ctv", "q8_0", "-fa", "off,on",
                           "-o", out, "--no-report")
    assert code == 0, err
    code, js, _ = run_cli(capsys, "show", "latest", "--format", "json", "-o", out)
    rows = {r["flash_attn"]: r for r in json.loads(js)}
    assert rows["off"]["status"] == "skipped" and "quantized V cache" in rows["off"]["error"]
    assert rows["on"]["status"] == "ok"
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["case-001.log"]  # no worker for case 0


def test_resume_with_options_that_differ_names_them(tmp_path, capsys):
    out = tmp_path / "out"
    model = fake(tmp_path)
    code, _, err = run_cli(capsys, "run", "-m", model, *SMALL, "-o", out)
    assert code == 0, err
    from edgebench.store.database import Store

    (run,) = Store(out, create=False).list_runs()
    run_id = run.run_id
    code, _, err = run_cli(capsys, "run", "--resume", run_id, "-m", model, *SMALL, "-o", out)
    assert code == 0, err  # the same command line again: nothing differs
    code, _, err = run_cli(capsys, "run", "--resume", run_id, "-m", model, *SMALL, "-p", "99", "-r", "7",
                           "-o", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "n_prompt" in err and "99" in err and "reps 7" in err and run_id in err


def test_run_help_names_values_not_python_types():
    from typer.testing import CliRunner

    from edgebench.cli.app import app

    text = CliRunner().invoke(app, ["run", "--help"]).output
    assert "N[,N...]" in text and "PATH|PRESET" in text and "N|auto" in text and "TOKENS" in text
    for python_type in ("<list[str]>", "<str>", "<int>", "<float>", "<path>"):  # typer's flags keep <bool>
        assert python_type not in text.lower(), python_type


def test_a_run_with_no_verify_is_marked_unverified_everywhere(tmp_path, capsys):
    out = tmp_path / "out"
    model = fake(tmp_path)
    assert run_cli(capsys, "run", "-m", model, *SMALL, "-o", out)[0] == 0
    code, _, err = run_cli(capsys, "run", "-m", model, *SMALL, "--device", "jetson-orin-nano-8gb", "--no-verify", "-o", out)
    assert code == 0 and "results are unverified" in err, err
    from edgebench.store.database import Store

    verified, unverified = Store(out, create=False).list_runs()
    code, text, _ = run_cli(capsys, "runs", "-o", out)
    assert "jetson-orin-nano-8gb (unverified)" in text and text.count("(unverified)") == 1
    code, text, _ = run_cli(capsys, "show", unverified.run_id, "-o", out)
    assert "(unverified)" in text.splitlines()[0]
    rows = list(csv.DictReader((out / unverified.run_id / "summary.csv").open()))
    assert rows[0]["device_verified"] == "False"
    code, _, err = run_cli(capsys, "compare", verified.run_id, unverified.run_id, "-s", out, "--force")
    assert f"{unverified.run_id} was measured with --no-verify" in err and verified.run_id + " was" not in err
