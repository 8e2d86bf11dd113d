"""The report: figures, index.html and report.md from a store of synthetic results (seeded, not
timed), section by section, HTML escaping, and a real headless browser rendering the page."""

import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from edgebench.cli import main
from edgebench.present import plots, report
from edgebench.records import Case, Sample
from edgebench.store.database import Store

EVIL = "tiny$\\notacommand$<script>alert(1)</script>"  # mathtext and HTML injection in one model name
BANDWIDTH = {"jetson-orin-nx-16gb": 102.4, "jetson-orin-nano-8gb": 68.0}  # as devices/*.toml say
OPS = {"prefill": {"MUL_MAT|mul_mat": .6, "FLASH_ATTN_EXT|attention": .15, "RMS_NORM|norm": .1, "CPY|copy": .15},
       "decode": {"MUL_MAT|mul_mat_vec": .75, "FLASH_ATTN_EXT|attention": .1, "RMS_NORM|norm": .05, "ADD|elementwise": .1}}


def _stub_class_shares(s, corrected=True):
    out = {}
    for phase, g in s[s["metric"] == "op_ns"].groupby("phase"):
        by = g.groupby(g["label"].str.split("|").str[-1])["value"].sum()
        out[phase] = (by / by.sum()).to_dict()
    return out


def _stub_summarize_energy(s, n_prompt, n_gen):
    e = s[(s["metric"] == "energy_j") & (s["label"] == "total")]
    reps = max(1, e["rep"].nunique())
    pre, dec = (e[e["phase"] == ph]["value"].sum() / reps for ph in ("prefill", "decode"))
    return {"energy_j_prefill": pre, "energy_j_decode": dec, "j_per_token_prefill": pre / n_prompt,
            "j_per_token_decode": dec / n_gen}


def _stub_get_profile(name):
    if name not in BANDWIDTH:
        raise KeyError(name)
    return types.SimpleNamespace(name=name, mem_bandwidth_gbs=BANDWIDTH[name])


@pytest.fixture(autouse=True)
def analysis_modules(monkeypatch):
    """Device profiles, op shares and energy come from the project's modules when they are
    installed, else from stubs with the same contract (so the report is tested either way)."""
    for name, fn, attr in (("edgebench.analysis.ops", _stub_class_shares, "class_shares"),
                           ("edgebench.analysis.energy", _stub_summarize_energy, "summarize_energy"),
                           ("edgebench.machine.profiles", _stub_get_profile, "get_profile")):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            setattr(mod, attr, fn)
            monkeypatch.setitem(sys.modules, name, mod)


def make_run(store, run_id, device="jetson-orin-nx-16gb", model=EVIL, quants=(("Q4_K_M", 4.85), ("Q8_0", 8.5)),
             prompts=(32, 300), ops=True, energy=True, fail=False, seed=0):
    rng = np.random.default_rng(seed)
    store.create_run(run_id, device, {}, {"cpu_model": "Test CPU <b>", "os": "Linux"})
    cid = 0
    for quant, bpw in quants:
        for p in prompts:
            case = Case(backend="llama-cpp", model=f"/m/{model}-{quant}.gguf", n_prompt=p, n_gen=4, reps=3)
            weights, kv_tok = int(1.35e8 * bpw / 8), 46080
            ss = [Sample(-1, "load", "load_ns", 1e8), Sample(-1, "load", "weights_bytes", weights, label="CPU"),
                  Sample(-1, "load", "kv_bytes", kv_tok * case.ctx_effective, label="CPU"),
                  Sample(-1, "load", "compute_bytes", 9e6, label="CPU"),
                  Sample(-1, "load", "rss_peak_bytes", weights * 1.3)]
            for rep in range(3):
                f = rng.lognormal(0, 0.02)
                ss.append(Sample(rep, "prefill", "prefill_ns", p * 1e5 * f))
                ss += [Sample(rep, "decode", "decode_step_ns", weights / 40 * f * rng.lognormal(0, .03), idx=i)
                       for i in range(4)]
                ss.append(Sample(rep, "decode", "kv_used_bytes", kv_tok * (p + 4)))
                if energy:
                    ss += [Sample(rep, "prefill", "energy_j", p * 1e-4 * 8, label="total"),
                           Sample(rep, "decode", "energy_j", weights / 40 * 4e-9 * 6, label="total"),
                           Sample(rep, "decode", "energy_j", weights / 40 * 4e-9 * 2, label="tegrastats:VDD_CPU_GPU_CV")]
            if ops:
                for rep in range(2):
                    for phase, mix in OPS.items():
                        for label, share in mix.items():
                            ss.append(Sample(rep, phase, "op_ns", share * 1e6, label=label))
                            ss.append(Sample(rep, phase, "op_count", 30, label=label))
            info = {"model": {"model_name": model, "quant": quant, "bpw": bpw, "n_params": 135_000_000,
                              "model_bytes": weights, "n_ctx_runtime": case.ctx_effective}}
            store.save_case(run_id, cid, case, "ok", "", info, ss, 0.0, 1.0)
            cid += 1
    if fail:
        case = Case(backend="llama-cpp", model="/m/broken.gguf", n_prompt=32, n_gen=4, reps=3)
        store.save_case(run_id, cid, case, "failed", "RuntimeError: bad <img src=x onerror=alert(2)>", {}, [], 0.0, 1.0)
    store.finish_run(run_id, "complete")


@pytest.fixture
def full_report(tmp_path):
    store = Store(tmp_path / "store")
    make_run(store, "run-a", fail=True)
    out = report.write_report(store, ["run-a"], tmp_path / "report")
    return out


def test_report_has_every_section_its_data_supports(full_report):
    d = full_report.parent
    assert full_report.name == "index.html"
    assert {"index.html", "report.md", "summary.csv"} <= {p.name for p in d.iterdir()}
    figs = {p.stem for p in (d / "figures").glob("*.png")}
    assert figs == {"throughput", "prompt", "latency", "memory", "kv_share", "ops", "energy", "roofline"}
    html = full_report.read_text()
    for sid in figs:
        assert f"<section id='{sid}'>" in html
    assert "id='depth'" not in html  # depth was not swept
    assert html.count("data:image/png;base64,") == len(figs)  # self-contained
    assert "<script" not in html.lower().replace("&lt;script", "")
    md = (d / "report.md").read_text()
    assert md.count("](figures/") == len(figs) and "## Decode roofline" in md
    header = (d / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"decode_tok_s", "roof_pct", "bound_tok_s", "j_per_token_decode"} <= set(header)


def test_strings_from_models_and_errors_are_escaped(full_report):
    html = full_report.read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<b>" not in html  # from the environment (cpu model)
    md = (full_report.parent / "report.md").read_text()
    assert "<script>" not in md and "<img" not in md


def test_sections_without_data_are_absent(tmp_path):
    store = Store(tmp_path / "store")
    make_run(store, "plain", device="unknown-board", quants=(("Q4_K_M", 4.85),), prompts=(32,), ops=False, energy=False)
    out = report.write_report(store, ["plain"], tmp_path / "r")
    figs = {p.stem for p in (out.parent / "figures").glob("*.png")}
    assert figs == {"throughput", "latency", "memory"}
    html = out.read_text()
    for sid in ("prompt", "depth", "kv_share", "ops", "energy", "roofline"):
        assert f"id='{sid}'" not in html
    assert "Summary table" in html


def test_a_run_without_results_still_gets_a_report(tmp_path):
    store = Store(tmp_path / "store")
    store.create_run("empty", "jetson-orin-nx-16gb", {}, {})
    case = Case(backend="llama-cpp", model="/m/x.gguf", n_prompt=8, n_gen=2, reps=1)
    out = report.write_report(store, ["empty"], tmp_path / "r0")
    assert "Summary table" in out.read_text() and not (out.parent / "figures").exists()
    store.save_case("empty", 0, case, "failed", "worker crashed with SIGSEGV", {}, [], 0.0, 1.0)
    out = report.write_report(store, ["empty"], tmp_path / "r1")
    assert "worker crashed with SIGSEGV" in out.read_text()


def test_several_runs_are_told_apart(tmp_path, capsys):
    store = Store(tmp_path / "store")
    make_run(store, "run-a", model="smol")
    make_run(store, "run-b", device="jetson-orin-nano-8gb", model="smol", seed=1)
    out = tmp_path / "both"
    code = main(["report", "run-a", "run-b", "--store", str(tmp_path / "store"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = (out / "summary.csv").read_text()
    assert "run-a" in summary and "run-b" in summary
    rows = report.collect(store, ["run-a", "run-b"])[1]
    names = plots.labels(rows, exclude=("quant",))
    assert any("jetson-orin-nx-16gb" in n for n in names) and any("jetson-orin-nano-8gb" in n for n in names)
    assert not any("run " in n for n in names)  # one run per device: the device names the run
    # the default: the latest run, written into its run folder in the store
    assert main(["report", "--store", str(tmp_path / "store")]) == 0
    assert (tmp_path / "store" / "run-b" / "index.html").is_file()
    assert main(["report", "nope", "--store", str(tmp_path / "store")]) == 2


def test_html_renders_in_a_headless_browser(full_report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    from PIL import Image

    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chrome-profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           full_report.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[:2] == (2000, 1280)
    non_white = float((img < 245).mean())
    assert non_white > 0.01, f"screenshot is blank ({non_white:.2%} non-white pixels)"
    # the figures drew: some rows far below the header hold dark plot pixels
    assert (img[600:2000] < 100).mean() > 0.002


# -- quality ------------------------------------------------------------------------------------
LADDER = (("F16", 16.0, 0.0), ("Q8_0", 8.5, 0.05), ("Q4_K_M", 4.85, 0.3), ("Q3_K_M", 3.9, 0.6), ("Q2_K", 3.0, 1.2))


def make_quality_run(store, run_id, spec=None, preset=""):
    """One case per level: speed (faster with fewer bits) and per-token quality samples scored with
    the real math on random logits (more noise for fewer bits)."""
    from edgebench.analysis import quality as q

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (200, 48))
    targets = rng.integers(0, 48, 200)
    store.create_run(run_id, "jetson-orin-nx-16gb", spec or {}, {})
    for cid, (quant, bpw, noise) in enumerate(LADDER):
        case = Case(backend="llama-cpp", model=f"/m/smol-{quant}.gguf", n_prompt=32, n_gen=4, reps=2, preset=preset)
        weights = int(1.35e8 * bpw / 8)
        ss = [Sample(-1, "load", "weights_bytes", weights, label="CPU"), Sample(-1, "load", "kv_bytes", 5e6, label="CPU"),
              Sample(-1, "load", "compute_bytes", 9e6, label="CPU")]
        for rep in range(2):
            ss.append(Sample(rep, "prefill", "prefill_ns", 32 * 1e5))
            ss += [Sample(rep, "decode", "decode_step_ns", weights / 40, idx=i) for i in range(4)]
        s = q.score(q.compress(ref, targets, 48), ref + rng.normal(0, noise, ref.shape), targets)
        ss += [Sample(0, "quality", m, float(v), idx=i) for m in q.TOKEN_METRICS for i, v in enumerate(getattr(s, m))]
        info = {"model": {"model_name": "smol", "quant": quant, "bpw": bpw, "n_params": 135_000_000}}
        store.save_case(run_id, cid, case, "ok", "", info, ss, 0.0, 1.0)
    store.finish_run(run_id, "complete")


def test_quality_gets_pareto_figures_columns_and_the_max_kld_verdict(tmp_path, capsys):
    store = Store(tmp_path / "store")
    make_quality_run(store, "qrun", spec={"max_kld": 0.1})
    out = report.write_report(store, ["qrun"], tmp_path / "r")
    figs = {p.stem for p in (out.parent / "figures").glob("*.png")}
    assert {"pareto_speed", "pareto_memory"} <= figs
    html, md = out.read_text(), (out.parent / "report.md").read_text()
    for text in (html, md):
        assert "Output quality" in text and "Speed vs quality" in text and "Memory vs quality" in text
        assert "fastest level under KLD 0.1 on jetson-orin-nx-16gb" in text
        assert "random weights" not in text
    rows = report.collect(store, ["qrun"])[1]
    ok = rows[rows["kld_mean"] <= 0.1]
    best = ok.loc[ok["decode_tok_s"].idxmax(), "quant"]
    assert f"on jetson-orin-nx-16gb (smol, llama-cpp): {best} at" in md
    assert rows.set_index("quant")["kld_mean"]["F16"] == 0 and rows["kld_mean"].is_monotonic_increasing
    header = (out.parent / "summary.csv").read_text().splitlines()[0].split(",")
    for col in ("kld_mean", "kld_p99", "kld_max", "same_top_p", "delta_p_rms", "ppl", "ppl_ref", "ppl_ratio"):
        assert col in header
    assert "<th class=\"\">KLD</th>" in html and "PPL ratio" in html
    # --max-kld on the command line overrides the spec
    code = main(["report", "qrun", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "r2"), "--max-kld", "0"])
    assert code == 0, capsys.readouterr().err
    assert "fastest level under KLD 0 on jetson-orin-nx-16gb (smol, llama-cpp): F16 at" in (tmp_path / "r2" / "report.md").read_text()


def test_a_negative_max_kld_is_bad_input(tmp_path, capsys):
    store = Store(tmp_path / "store")
    make_quality_run(store, "qrun")
    code = main(["report", "qrun", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "r"), "--max-kld", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and "--max-kld must be >= 0" in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "index.html").exists()


def test_random_weights_are_labelled(tmp_path):
    store = Store(tmp_path / "store")
    make_quality_run(store, "synth", preset="smollm-135m")
    out = report.write_report(store, ["synth"], tmp_path / "r")
    assert "random weights: quality not meaningful" in out.read_text()
    assert "random weights: quality not meaningful" in (out.parent / "report.md").read_text()


def test_pareto_front_and_knee():
    from edgebench.present import pareto

    x = [0.001, 0.01, 0.1, 1.0, 0.5]  # mean KLD
    y = [10, 40, 48, 50, 30]  # tok/s; the 0.5 point is beaten by 0.1 (faster and better)
    front = pareto.pareto_front(x, y, maximize_y=True)
    assert front == [0, 1, 2, 3]
    assert pareto.knee(x, y, front) == 1  # the big jump in speed for little KLD
    assert pareto.pareto_front([1, 2, 3], [5, 4, 6], maximize_y=False) == [0, 1]
    assert pareto.knee([1, 2], [1, 2], [0, 1]) is None


def test_latency_axis_is_logarithmic_only_when_p99_is_far_from_p50():
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    base = {"model": ["m", "m"], "quant": ["Q8_0", "Q4_K_M"], "tpot_ms_p50": [10.0, 8.0], "tpot_ms_p90": [11.0, 9.0]}
    near = plots.latency_percentiles(pd.DataFrame({**base, "tpot_ms_p99": [12.0, 10.0]}))
    far = plots.latency_percentiles(pd.DataFrame({**base, "tpot_ms_p99": [12.0, 800.0]}))  # a stall at p99
    assert near.axes[0].get_xscale() == "linear" and "log" not in near.axes[0].get_xlabel()
    assert far.axes[0].get_xscale() == "log" and "(log scale)" in far.axes[0].get_xlabel()
