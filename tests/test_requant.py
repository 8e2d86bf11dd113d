"""A user's own GGUF at every level (models/requant.py): the real SmolLM2-135M (Q4_1) dequantized to
F16 and requantized from it, with its provenance in the files' metadata and in every stored case;
`edgebench models make --from` and `edgebench run -m FILE -q LADDER` build the same cached files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.cli import main
from edgebench.errors import InputError
from edgebench.records import Case
from edgebench.run import spec as specmod
from edgebench.run.plan import ModelRef, expand, resolve_models
from edgebench.run.worker import BUILD_SIGNAL_ENV

LEVELS = ("F16", "Q8_0", "Q2_K")
pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def levels(real_gguf) -> dict[str, Path]:
    """The real model at F16, Q8_0 and Q2_K, in the session's model cache (the run below reuses them)."""
    from edgebench.models.requant import ensure_requantized

    return {q: ensure_requantized(real_gguf, q) for q in LEVELS}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_f16_is_the_source_dequantized_and_names_it(levels, real_gguf):
    from edgebench.models.cache import file_sha256
    from edgebench.models.gguf_file import read_gguf_info, read_metadata

    meta = read_metadata(levels["F16"])
    assert meta["edgebench.requantized_from"] == "Q4_1"
    assert meta["edgebench.source_sha256"] == file_sha256(real_gguf)
    assert meta["edgebench.source_name"] == real_gguf.name
    info = read_gguf_info(levels["F16"])
    assert info.quant == "F16"
    assert info.provenance == {"requantized_from": "Q4_1", "source_sha256": file_sha256(real_gguf),
                               "source_name": real_gguf.name}
    types = {t for g, c in info.tensor_types.items() if g != "norm" for t in c}
    assert types == {"F16"}  # every matrix dequantized (the source's token_embd was Q8_0, the rest Q4_1)
    assert levels["F16"].parent.name == file_sha256(real_gguf)[:16]
    assert levels["F16"].name == "SmolLM2-135M-Instruct-F16.gguf"


def test_each_level_has_its_file_type_and_the_provenance(levels):
    from edgebench.models.gguf_file import read_gguf_info

    for q in LEVELS:
        info = read_gguf_info(levels[q])
        assert info.quant == q, q
        assert info.provenance["requantized_from"] == "Q4_1", q
    q8 = read_gguf_info(levels["Q8_0"]).tensor_types
    assert q8["attn_q"] == {"Q8_0": 30} and q8["ffn_down"] == {"Q8_0": 30}
    # Q2_K: k-quant tensors where rows allow it (llama.cpp falls back on 576-wide rows)
    assert "Q3_K" in read_gguf_info(levels["Q2_K"]).tensor_types["ffn_down"]
    sizes = [levels[q].stat().st_size for q in LEVELS]
    assert sizes == sorted(sizes, reverse=True)


def test_the_cache_is_reused(levels, real_gguf):
    from edgebench.models.requant import ensure_requantized

    before = {q: p.stat().st_mtime_ns for q, p in levels.items()}
    for q in LEVELS:
        assert ensure_requantized(real_gguf, q) == levels[q]
    assert {q: p.stat().st_mtime_ns for q, p in levels.items()} == before


def test_a_stale_level_is_rebuilt(levels, real_gguf, tmp_path):
    from edgebench.models.gguf_file import read_gguf_info
    from edgebench.models.requant import ensure_requantized

    # a truncated file where a level should be (a builder killed without its temp file): rebuilt
    other = ensure_requantized(levels["F16"], "Q8_0", cache=tmp_path)
    other.write_bytes(other.read_bytes()[:1000])
    rebuilt = ensure_requantized(levels["F16"], "Q8_0", cache=tmp_path)
    assert rebuilt == other and read_gguf_info(rebuilt).quant == "Q8_0"
    # from an unquantized source the levels name it, and no F16 is made on the way
    assert read_gguf_info(rebuilt).provenance["requantized_from"] == "F16"
    assert [p.name for p in rebuilt.parent.glob("*.gguf")] == [rebuilt.name]


def test_level_names_drop_the_sources_quant_suffix():
    from edgebench.models.requant import level_name

    assert level_name(Path("SmolLM2-135M-Instruct.Q4_1.gguf"), "Q8_0") == "SmolLM2-135M-Instruct-Q8_0.gguf"
    assert level_name(Path("qwen2.5-0.5b-instruct-q4_k_m.gguf"), "F16") == "qwen2.5-0.5b-instruct-F16.gguf"
    assert level_name(Path("llama-3.gguf"), "Q2_K") == "llama-3-Q2_K.gguf"


def test_plan_requantizes_a_gguf_only_with_a_ladder(real_gguf):
    spec = specmod.build_spec({"models": [str(real_gguf)], "quants": "F16,q8_0", "backends": "llama-cpp"})
    refs, notes = resolve_models(spec)
    assert refs == [ModelRef("llama-cpp", quant="F16", source=str(real_gguf)),
                    ModelRef("llama-cpp", quant="Q8_0", source=str(real_gguf))]
    assert notes == [f"{real_gguf.name}: levels requantized from Q4_1: no level is more accurate than its source"]
    case = expand(spec, refs, 2)[0][1]
    assert case.model == "" and case.source == str(real_gguf) and case.quant_request == "F16"
    # a planned case and the stored one (with its built file) have one key: --resume finds it
    assert case.key() == Case.from_dict(case.to_dict() | {"model": "/cache/x-F16.gguf"}).key()
    plain, notes = resolve_models(specmod.build_spec({"models": [str(real_gguf)], "backends": "llama-cpp"}))
    assert plain == [ModelRef("llama-cpp", path=str(real_gguf))] and notes == []
    with pytest.raises(InputError, match="unknown quant level 'Q9'"):
        resolve_models(specmod.build_spec({"models": [str(real_gguf)], "quants": "Q9", "backends": "llama-cpp"}))


def test_run_requantizes_and_every_row_names_the_source(levels, real_gguf, tmp_path, capsys):
    from edgebench.models.cache import file_sha256
    from edgebench.run.session import _done_keys, _plan
    from edgebench.store.database import Store

    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "-m", real_gguf, "-q", "F16,Q8_0", "-p", 16, "-n", 4, "-r", 1,
                           "--backend", "llama-cpp", "--no-warmup", "--no-report", "-o", out)
    assert code == 0, err[-2000:]
    said = " ".join(err.split())  # rich wraps lines
    assert said.count("levels requantized from Q4_1: no level is more accurate than its source") == 1
    store = Store(out, create=False)
    run = store.get_run("latest")
    cases = store.get_cases(run.run_id)
    assert [c["status"] for c in cases] == ["ok", "ok"]
    for c, q in zip(cases, ("F16", "Q8_0")):
        assert c["model"] == str(levels[q]) and c["source"] == str(real_gguf) and c["quant_request"] == q
        m = c["info"]["model"]
        assert m["quant"] == q and m["requantized_from"] == "Q4_1"
        assert m["source_sha256"] == file_sha256(real_gguf) and m["source_name"] == real_gguf.name
        assert m["model_sha256"] == file_sha256(levels[q])  # the measured file's own hash
    planned, _ = _plan(specmod.RunSpec.from_dict(run.spec))
    assert {case.key() for _, case in planned} == _done_keys(cases) & {case.key() for _, case in planned}
    assert all(case.key() in _done_keys(cases) for _, case in planned)


def test_a_crash_while_requantizing_fails_that_case_only(real_gguf, tmp_path, monkeypatch):
    from edgebench.run.runner import run_cases
    from edgebench.store.database import Store

    fake = tmp_path / "m.fake"
    fake.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200}))
    small = {"n_prompt": 8, "n_gen": 2, "reps": 1}
    planned = [(ModelRef("llama-cpp", quant="Q8_0", source=str(real_gguf)),
                Case(backend="llama-cpp", model="", source=str(real_gguf), quant_request="Q8_0", **small)),
               (ModelRef("fake", path=str(fake)), Case(backend="fake", model=str(fake), **small))]
    monkeypatch.setenv(BUILD_SIGNAL_ENV, "SIGSEGV")
    store = Store(tmp_path)
    store.create_run("r", "test", {}, {})
    assert run_cases(store, "r", planned, tmp_path / "r") == {"ok": 1, "failed": 1, "skipped": 0}
    built, measured = store.get_cases("r")
    assert built["status"] == "failed" and built["model"] == "" and built["source"] == str(real_gguf)
    assert built["error"].startswith(f"could not build {real_gguf.name} Q8_0: worker crashed with SIGSEGV")
    assert measured["status"] == "ok"


def test_models_make_from_writes_the_levels(levels, real_gguf, capsys):
    code, out, err = run_cli(capsys, "models", "make", "--from", real_gguf, "-q", "F16,Q8_0")
    assert code == 0, err
    assert out.splitlines() == [str(levels["F16"]), str(levels["Q8_0"])]  # the paths, on stdout
    assert "no level is more accurate than its source" in " ".join(err.split())


@pytest.mark.parametrize("args,message", [
    (("-q", "F16"), "not a GGUF file"),
    (("-q", "Q9"), "unknown quant level 'Q9'"),
    (("-q", "F16", "--backend", "onnxruntime-genai"), "--from builds GGUF levels (llama-cpp) or ONNX levels"),
])
def test_models_make_from_bad_input_is_one_line(tmp_path, capsys, args, message):
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a model\n")
    code, _, err = run_cli(capsys, "models", "make", "--from", bad, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
