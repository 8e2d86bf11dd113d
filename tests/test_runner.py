"""The runner and store around a FakeBackend: deterministic timings, injected failures."""

import json

import pytest

from edgebench.analysis import summary
from edgebench.records import Case
from edgebench.run.plan import ModelRef
from edgebench.run.runner import run_cases, run_worker
from edgebench.store.database import Store


def fake_model(tmp_path, name="m", **cfg):
    p = tmp_path / f"{name}.fake"
    p.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200, **cfg}))
    return str(p)


def case(model, **kw):
    return Case(backend="fake", model=model, **({"n_prompt": 16, "n_gen": 4, "reps": 2} | kw))


def test_worker_streams_every_raw_sample(tmp_path):
    res = run_worker(case(fake_model(tmp_path), reps=3, n_gen=5), tmp_path / "log")
    assert res.status == "ok", res.error
    metrics = [s.metric for s in res.samples]
    assert metrics.count("prefill_ns") == 3
    assert metrics.count("decode_step_ns") == 15
    assert metrics.count("load_ns") == 1
    assert res.info["model"]["quant"] == "F16"
    steps = [s for s in res.samples if s.metric == "decode_step_ns"]
    assert sorted({s.idx for s in steps}) == [0, 1, 2, 3, 4]
    # busy-wait timings: each step at least the configured 200 us
    assert min(s.value for s in steps) >= 200_000


@pytest.mark.parametrize("fail,where,reason", [
    ("error", "prefill", "RuntimeError: injected failure at prefill"),
    ("crash", "decode", "worker crashed with SIGSEGV"),
    ("oom", "load", "worker killed by SIGKILL (out of memory? see dmesg)"),
])
def test_worker_failures_become_case_errors(tmp_path, fail, where, reason):
    res = run_worker(case(fake_model(tmp_path, fail=fail, fail_at=where)), tmp_path / "log")
    assert res.status == "failed"
    assert res.error.startswith(reason)


def test_timeout_kills_the_worker(tmp_path):
    res = run_worker(case(fake_model(tmp_path, fail="hang", fail_at="decode"), timeout_s=2.0), tmp_path / "log")
    assert res.status == "failed" and res.error == "timeout after 2 s"


def test_samples_of_finished_reps_survive_a_crash(tmp_path):
    # crash at decode of the first rep: the load sample was streamed before it
    res = run_worker(case(fake_model(tmp_path, fail="crash", fail_at="decode")), tmp_path / "log")
    assert res.status == "failed"
    assert [s.metric for s in res.samples].count("load_ns") == 1


def test_sweep_goes_on_after_failures_and_store_is_case_by_case(tmp_path):
    store = Store(tmp_path)
    store.create_run("r1", "test", {}, {})
    ok, bad = fake_model(tmp_path, "ok"), fake_model(tmp_path, "bad", fail="crash", fail_at="prefill")
    planned = [(ModelRef("fake", path=m), case(m, n_prompt=p)) for m in (bad, ok) for p in (8, 16)]
    counts = run_cases(store, "r1", planned, tmp_path / "r1")
    assert counts == {"ok": 2, "failed": 2, "skipped": 0}
    rows = summary.summarize_run(store, "r1")
    assert [r["status"] for r in rows] == ["failed", "failed", "ok", "ok"]
    ok_rows = [r for r in rows if r["status"] == "ok"]
    for r in ok_rows:
        assert r["decode_tok_s"] > 0 and r["prefill_tok_s"] > 0
        assert r["tpot_ms_p50"] <= r["tpot_ms_p90"] <= r["tpot_ms_p99"]
        # fake KV: 1024 bytes/token over a 256-token context
        assert r["kv_bytes"] == 1024 * 256
        assert r["kv_used_bytes"] == 1024 * (r["n_prompt"] + r["n_gen"])
        assert r["model_sha256"] and len(r["model_sha256"]) == 64
    # resume: done keys are skipped, nothing re-measured
    done = {c["case_key"] for c in store.get_cases("r1") if c["status"] == "ok"}
    counts = run_cases(store, "r1", planned, tmp_path / "r1", done_keys=done)
    assert counts["skipped"] == 2 and counts["failed"] == 2


def test_summary_statistics_from_known_samples():
    import pandas as pd

    rows = []
    for rep, pre in enumerate((1e9, 2e9)):  # 100 tokens in 1 s and in 2 s
        rows.append(dict(rep=rep, phase="prefill", metric="prefill_ns", idx=0, label="", value=pre))
        for i in range(4):
            rows.append(dict(rep=rep, phase="decode", metric="decode_step_ns", idx=i, label="", value=(rep + 1) * 1e7))
    s = summary.timing_summary(pd.DataFrame(rows), n_prompt=100, n_gen=4)
    assert s["prefill_tok_s"] == pytest.approx(75.0)  # mean of 100 and 50
    assert s["ttft_ms"] == pytest.approx(1500.0)
    assert s["decode_tok_s"] == pytest.approx((100 + 50) / 2)  # 4 steps in 40 ms and in 80 ms
    assert s["tpot_ms_p50"] == pytest.approx(15.0)
