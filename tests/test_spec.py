import pytest

from edgebench.errors import InputError
from edgebench.records import Case, pad_ctx
from edgebench.run.plan import ModelRef, expand
from edgebench.run.spec import RunSpec, build_spec, load_toml, parse_list


def test_parse_list_types_and_errors():
    assert parse_list("1,2,4", int, "threads") == (1, 2, 4)
    assert parse_list([128, 512], int, "n_prompt") == (128, 512)
    with pytest.raises(InputError, match="--n-prompt: 'x' is not a valid int"):
        parse_list("128,x", int, "n_prompt")
    with pytest.raises(InputError, match="empty value"):
        parse_list("1,,2", int, "threads")


def test_defaults_quick_without_model_llama_bench_with_model():
    quick = build_spec({})
    assert quick.models == ("smollm-135m",)
    assert quick.sweep["n_prompt"] == (128,) and quick.reps == 3
    full = build_spec({"models": ["m.gguf"]})
    assert full.sweep["n_prompt"] == (512,) and full.sweep["n_gen"] == (128,) and full.reps == 5


def test_expand_is_cartesian_product():
    spec = build_spec({"models": ["m.fake"], "threads": "1,2", "n_prompt": "128,512", "depth": "0,256"})
    planned = expand(spec, [ModelRef("fake", path="m.fake")], n_threads_default=4)
    assert len(planned) == 8
    assert {(c.n_threads, c.n_prompt, c.depth) for _, c in planned} == {
        (t, p, d) for t in (1, 2) for p in (128, 512) for d in (0, 256)}


def test_ctx_defaults_to_padded_tokens_and_too_small_ctx_is_an_error():
    c = Case(backend="fake", model="m", n_prompt=100, n_gen=10, depth=200)
    assert c.ctx_effective == pad_ctx(310) == 512
    with pytest.raises(ValueError, match="context 256 is too small for depth \\+ n_prompt \\+ n_gen = 310"):
        Case(backend="fake", model="m", n_prompt=100, n_gen=10, depth=200, n_ctx=256)


@pytest.mark.parametrize("field,value", [("n_prompt", -1), ("n_gen", -1), ("reps", 0), ("n_threads", -1), ("depth", -5)])
def test_non_positive_counts_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        Case(backend="fake", model="m", **{field: value})


def test_bad_enum_values_rejected():
    with pytest.raises(ValueError, match="flash_attn must be one of auto, on, off"):
        Case(backend="fake", model="m", flash_attn="maybe")
    with pytest.raises(ValueError, match="cache_type_k"):
        Case(backend="fake", model="m", cache_type_k="q3")


def test_toml_config(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('models = ["a.fake"]\nthreads = [1, 2]\nn_prompt = "64,128"\nreps = 2\n')
    spec = build_spec({"reps": None}, load_toml(good))
    assert spec.sweep["threads"] == (1, 2) and spec.sweep["n_prompt"] == (64, 128) and spec.reps == 2
    # CLI options override the file
    assert build_spec({"reps": 7}, load_toml(good)).reps == 7
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_toml(bad)
    unknown = tmp_path / "u.toml"
    unknown.write_text("thread = 2\n")
    with pytest.raises(InputError, match="unknown key\\(s\\) thread"):
        load_toml(unknown)
    with pytest.raises(InputError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")


def test_example_sweep_file_is_valid():
    from pathlib import Path

    spec = build_spec({}, load_toml(Path(__file__).parent.parent / "examples" / "sweep.toml"))
    assert spec.reps >= 1 and spec.sweep


def test_runspec_roundtrip():
    spec = build_spec({"models": ["a.fake"], "threads": "1,2", "profile": "ops"})
    assert RunSpec.from_dict(spec.to_dict()) == spec


def test_zero_prompt_or_gen_is_valid_but_not_both():
    assert Case(backend="fake", model="m", n_prompt=0).tokens_needed == 128  # generation only
    assert Case(backend="fake", model="m", n_gen=0).tokens_needed == 512  # prompt only
    with pytest.raises(ValueError, match="n_prompt and n_gen cannot both be 0"):
        Case(backend="fake", model="m", n_prompt=0, n_gen=0)
    assert build_spec({"n_prompt": ["0"], "n_gen": ["0", "16"]}).sweep["n_prompt"] == (0,)


def test_flash_attn_accepts_llama_bench_0_and_1():
    assert build_spec({"flash_attn": ["1"]}).sweep["flash_attn"] == ("on",)
    assert build_spec({"flash_attn": ["0"]}).sweep["flash_attn"] == ("off",)
    assert build_spec({"flash_attn": ["auto,1", "off"]}).sweep["flash_attn"] == ("auto", "on", "off")
    assert build_spec({}, {"flash_attn": 1}).sweep["flash_attn"] == ("on",)  # a TOML number
    assert build_spec({}, {"flash_attn": [0, "on"]}).sweep["flash_attn"] == ("off", "on")


def test_repeated_flag_adds_to_the_list():
    assert parse_list(["64", "128,256"], int, "n_prompt") == (64, 128, 256)
    spec = build_spec({"models": ["m.fake"], "n_prompt": ["64", "128"], "threads": ["1,2", "4"]})
    assert spec.sweep["n_prompt"] == (64, 128) and spec.sweep["threads"] == (1, 2, 4)
    planned = expand(spec, [ModelRef("fake", path="m.fake")], n_threads_default=4)
    assert sorted({c.n_prompt for _, c in planned}) == [64, 128]
    with pytest.raises(InputError, match="--n-prompt: empty value"):
        parse_list(["64", ""], int, "n_prompt")
    # a TOML file keeps working: a list, a comma string, a list of comma strings
    assert build_spec({}, {"n_prompt": [64, 128]}).sweep["n_prompt"] == (64, 128)
    assert build_spec({}, {"n_prompt": "64,128"}).sweep["n_prompt"] == (64, 128)
    assert build_spec({}, {"n_prompt": ["64,128", "256"]}).sweep["n_prompt"] == (64, 128, 256)
