"""The quality pass (run/quality.py): on the real SmolLM2-135M at several levels (in-process, short:
ctx 128, 2 chunks) and through the CLI on the fake backend; bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgebench.cli import main
from edgebench.records import Case
from edgebench.run import protocol as msg

CTX, CHUNKS = 128, 2


# -- the real model at several levels --------------------------------------------------------
@pytest.fixture(scope="session")
def real_levels(real_gguf, model_cache) -> dict[str, Path]:
    """F16 (dequantized from the wheel's Q4_1), then Q8_0, Q4_K_M and Q2_K quantized from it."""
    try:
        from edgebench.models.requant import ensure_requantized
    except ImportError:  # pragma: no cover - before models/requant.py
        ensure_requantized = None
    if ensure_requantized is not None:
        return {q: ensure_requantized(real_gguf, q, cache=model_cache) for q in ("F16", "Q8_0", "Q4_K_M", "Q2_K")}
    import llama_cpp  # pragma: no cover

    out_dir = model_cache / "test-levels"  # pragma: no cover
    out_dir.mkdir(exist_ok=True)
    levels = {}
    for q, src in (("F16", real_gguf), ("Q8_0", None), ("Q4_K_M", None), ("Q2_K", None)):
        dst = out_dir / f"smollm2-{q}.gguf"
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{q}")
        p.allow_requantize = True
        assert llama_cpp.llama_model_quantize(str(src or levels["F16"]).encode(), str(dst).encode(), p) == 0
        levels[q] = dst
    return levels


def _quality(path: Path, ref: Path | None, text: str = "") -> tuple[dict[str, np.ndarray], dict, str]:
    """Run the quality pass of one level in-process; its per-token samples by metric and its info."""
    from edgebench.backends.llama_cpp import LlamaCppBackend
    from edgebench.run.quality import QualityError, run_quality

    case = Case("llama-cpp", str(path), speed=False, quality=True, quality_ctx=CTX, quality_chunks=CHUNKS,
                quality_ref=str(ref) if ref else "", quality_text=text, n_threads=2)
    got: list[msg.Message] = []
    backend = LlamaCppBackend()
    error = ""
    try:
        backend.load(case)
        run_quality(backend, case, got.append, lambda r: r)
    except QualityError as e:
        error = str(e)
    finally:
        backend.close()
    samples: dict[str, list[float]] = {}
    for m in got:
        if isinstance(m, msg.Samples):
            for s in m.samples:
                assert s.phase == "quality" and s.rep == 0
                samples.setdefault(s.metric, []).append(s.value)
    info = next((m.info["quality"] for m in got if isinstance(m, msg.Info) and "quality" in m.info), {})
    return {k: np.array(v) for k, v in samples.items()}, info, error


@pytest.fixture(scope="session")
def reference_run(real_levels):
    return _quality(real_levels["F16"], None)


def test_the_reference_against_itself_has_kld_0_and_the_same_top_everywhere(reference_run):
    s, info, error = reference_run
    assert not error
    n = CHUNKS * (CTX - 1 - CTX // 2)
    assert info["scored_tokens"] == n and info["is_reference"] and info["seed"] == 0
    assert set(s) == {"kld", "delta_p", "same_top", "nll", "nll_ref"} and all(len(v) == n for v in s.values())
    assert s["kld"].max() < 1e-6
    assert s["same_top"].min() == 1.0
    assert np.abs(s["delta_p"]).max() < 1e-5
    assert np.allclose(s["nll"], s["nll_ref"], atol=1e-5)
    assert Path(info["ref_file"]).stat().st_size == info["ref_file_bytes"] > 0


def test_mean_kld_orders_the_levels(real_levels, reference_run):
    means = {}
    for q in ("Q8_0", "Q4_K_M", "Q2_K"):
        s, info, error = _quality(real_levels[q], real_levels["F16"])
        assert not error, error
        assert info["tokens_sha256"] == reference_run[1]["tokens_sha256"]  # the same tokens
        means[q] = s["kld"].mean()
    assert 0 < means["Q8_0"] < means["Q4_K_M"] < means["Q2_K"], means


def test_a_text_too_short_in_tokens_fails_the_case_with_its_reason(real_levels, tmp_path):
    text = tmp_path / "aaa.txt"
    text.write_text("a" * 400)  # 400 bytes but few tokens: BPE merges the run
    _, _, error = _quality(real_levels["F16"], None, text=str(text))
    assert "too short for one chunk of 128" in error


def test_a_candidate_whose_reference_never_ran_fails_with_one_clear_reason(real_levels, tmp_path):
    other = tmp_path / "copy.gguf"
    other.write_bytes(real_levels["Q8_0"].read_bytes()[:-1] + b"\0")  # another sha256, no reference files
    _, _, error = _quality(real_levels["Q2_K"], other)
    assert "its reference case must run first" in error


# -- the CLI on the fake backend -------------------------------------------------------------
def _fake(tmp_path, name, **cfg) -> str:
    p = tmp_path / f"{name}.fake"
    p.write_text(json.dumps({"prefill_us_per_token": 5, "decode_us": 50, "n_vocab": 200, **cfg}))
    return str(p)


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


QUICK = ("--backend", "fake", "-p", "8", "-n", "2", "-r", "1", "--no-report", "--no-verify",
         "--quality-ctx", "32", "--quality-chunks", "2")


def test_run_with_quality_stores_the_samples_and_the_summary(tmp_path, capsys):
    from edgebench.analysis.summary import summarize_run
    from edgebench.store.database import Store

    ref, near, far = (_fake(tmp_path, n, logit_noise=z) for n, z in (("ref", 0.0), ("near", 0.2), ("far", 1.0)))
    out = tmp_path / "out"
    code, _, err = _run(capsys, "run", "-m", far, "-m", ref, "-m", near, "--quality", "--quality-ref", ref,
                        "--max-kld", "0.5", "-o", out, *QUICK)
    assert code == 0, err
    store = Store(out, create=False)
    run = store.get_run("latest")
    assert run.spec["max_kld"] == 0.5 and run.spec["quality"]
    cases = store.get_cases(run.run_id)
    assert Path(cases[0]["model"]).name == "ref.fake"  # the reference runs first
    samples = store.get_samples(run.run_id)
    q = samples[samples["phase"] == "quality"]
    assert set(q["metric"]) == {"kld", "delta_p", "same_top", "nll", "nll_ref"}
    assert len(q[(q["case_id"] == 1) & (q["metric"] == "kld")]) == 2 * 15
    rows = {Path(r["model"]).stem if "/" in str(r["model"]) else r["model"]: r for r in summarize_run(store, run.run_id)}
    assert rows["ref"]["kld_mean"] < 1e-6 < rows["near"]["kld_mean"] < rows["far"]["kld_mean"]
    assert rows["near"]["decode_tok_s"] > 0  # speed and quality in one row


def test_quality_command_has_no_speed_samples(tmp_path, capsys):
    from edgebench.store.database import Store

    ref, cand = _fake(tmp_path, "ref"), _fake(tmp_path, "cand", logit_noise=0.3)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "quality", ref, cand, "--backend", "fake", "--quality-ref", ref, "--quality-ctx", "32",
                        "--quality-chunks", "1", "--no-report", "--no-verify", "-o", out)
    assert code == 0, err
    store = Store(out, create=False)
    samples = store.get_samples(store.get_run("latest").run_id)
    assert not set(samples["phase"]) & {"prefill", "decode"}
    assert (samples["phase"] == "quality").any()


def test_another_vocabulary_fails_that_case_with_its_reason(tmp_path, capsys):
    ref, other = _fake(tmp_path, "ref"), _fake(tmp_path, "other", n_vocab=300)
    code, _, err = _run(capsys, "quality", ref, other, "--backend", "fake", "--quality-ref", ref, "--quality-ctx", "32",
                        "--quality-chunks", "1", "--no-report", "--no-verify", "-o", tmp_path / "out")
    assert code == 1
    assert "another vocabulary" in err


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"), (b"ab\0cd" * 50, "is not text"), (b"\xff\xfe" * 100, "is not text"),
    (b"short", "too short for one chunk of 32 tokens"), (None, "no such file"),
])
def test_bad_texts_are_one_line_and_exit_2(tmp_path, capsys, content, expected):
    text = tmp_path / "t.txt"
    if content is not None:
        text.write_bytes(content)
    code, _, err = _run(capsys, "run", "-m", _fake(tmp_path, "m"), "--quality", "--text", text,
                        "-o", tmp_path / "out", *QUICK)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "edgebench.db").exists()


@pytest.mark.parametrize("args, expected", [
    (("--quality", "--quality-ref", "nope.gguf"), "no such file"),
    (("--quality", "--quality-ref", "Q9_9"), "neither a model file nor a quant level"),
    (("--quality", "--quality-ctx", "7"), "even number"),
    (("--quality-ctx", "64"), "needs --quality"),
    (("--quality", "--max-kld", "-1"), "--max-kld must be > 0"),
])
def test_bad_quality_options_are_one_line_and_exit_2(tmp_path, capsys, args, expected):
    code, _, err = _run(capsys, "run", "-m", _fake(tmp_path, "m"), "--backend", "fake", "--no-report", "--no-verify",
                        "-o", tmp_path / "out", *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_a_gguf_reference_with_another_vocabulary_is_bad_input(tmp_path, capsys, real_gguf, tiny_gguf):
    code, _, err = _run(capsys, "quality", tiny_gguf["Q8_0"], "--quality-ref", real_gguf, "--no-report",
                        "--no-verify", "-o", tmp_path / "out")
    assert code == 2 and "vocabulary" in err and len(err.strip().splitlines()) == 1, err


def test_a_ladder_gets_its_f16_reference_case_first():
    from edgebench.run import quality_plan
    from edgebench.run.plan import ModelRef
    from edgebench.run.spec import RunSpec

    refs = [ModelRef("llama-cpp", preset="tiny", quant=q) for q in ("Q4_K_M", "Q8_0")]
    planned = [(r, Case("llama-cpp", "", preset="tiny", quant_request=r.quant)) for r in refs]
    out, _ = quality_plan.apply(RunSpec(quality=True), planned)
    assert [(c.quant_request, c.speed, c.quality_ref) for _, c in out] == [
        ("F16", False, ""), ("Q4_K_M", True, "quant:F16"), ("Q8_0", True, "quant:F16")]
    planned.append((ModelRef("llama-cpp", preset="tiny", quant="F16"), Case("llama-cpp", "", preset="tiny", quant_request="F16")))
    out, _ = quality_plan.apply(RunSpec(quality=True), planned)
    assert [(c.quant_request, c.speed, c.quality_ref) for _, c in out] == [
        ("F16", True, ""), ("Q4_K_M", True, "quant:F16"), ("Q8_0", True, "quant:F16")]


def test_a_text_is_tokenized_by_each_model_and_scored_on_the_same_tokens(real_levels, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"Sentence {i} tells of the river, the mill and the {i % 7} boats that pass it by."
                             for i in range(40)))
    ref_s, ref_info, error = _quality(real_levels["F16"], None, text=str(text))
    assert not error and ref_info["seed"] is None and ref_s["kld"].max() < 1e-6
    s, info, error = _quality(real_levels["Q8_0"], real_levels["F16"], text=str(text))
    assert not error and info["tokens_sha256"] == ref_info["tokens_sha256"]
    assert 0 < s["kld"].mean() < 0.05
