"""Models named on the Hugging Face Hub (models/hub.py), resolved offline from a local cache built in
huggingface_hub's own layout (refs / snapshots / blobs) with the real SmolLM2 model as the blob:
nothing is downloaded (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgebench.cli import main
from edgebench.errors import InputError
from edgebench.models import hub

pytest.importorskip("huggingface_hub")
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _link(target: Path, at: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(os.path.relpath(target, at.parent))


def make_cache(root: Path, repo: str, files: dict[str, Path], revision: str = REVISION) -> Path:
    """A Hugging Face cache holding ``files`` (repo path -> a local file) of ``repo`` at
    ``revision``, laid out as huggingface_hub writes it: blobs named by sha256, refs/main, and
    snapshots/<revision>/<file> linking to the blobs. A blob is a link to the file, not a copy."""
    from edgebench.models.cache import file_sha256

    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    for name, src in files.items():
        blob = folder / "blobs" / file_sha256(src)
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.symlink_to(src.resolve())
        _link(blob, folder / "snapshots" / revision / name)
    return root


@pytest.fixture()
def offline_cache(real_gguf, tmp_path, monkeypatch) -> Path:
    root = make_cache(tmp_path / "hf", REPO, {"SmolLM2-135M-Instruct-Q4_1.gguf": real_gguf})
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_references_parse_like_llama_cpp_names():
    assert hub.parse("hf://ORG/REPO") == ("ORG/REPO", "", "")
    assert hub.parse("hf://ORG/REPO:q4_k_m") == ("ORG/REPO", "q4_k_m", "")
    assert hub.parse("hf://ORG/REPO/sub/model-Q8_0.gguf") == ("ORG/REPO", "", "sub/model-Q8_0.gguf")
    assert hub.parse("ORG/REPO:Q4_1") == ("ORG/REPO", "Q4_1", "")
    assert hub.is_hub_ref("ORG/REPO:Q4_1") and hub.is_hub_ref("hf://a/b")
    assert not hub.is_hub_ref("models/model.gguf") and not hub.is_hub_ref("smollm-135m")
    for bad in ("hf://just-org", "hf://ORG/REPO:Q4/x.gguf", "hf://ORG/REPO/../x.gguf"):
        with pytest.raises(InputError, match="not a Hugging Face reference"):
            hub.parse(bad)


def test_quant_levels_are_read_from_file_names():
    assert hub.quant_of("SmolLM2-135M-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert hub.quant_of("smollm2-135m-instruct.q8_0.gguf") == "Q8_0"
    assert hub.quant_of("Qwen3-0.6B-IQ4_XS.gguf") == "IQ4_XS"
    assert hub.quant_of("model-f16-00001-of-00002.gguf") == "F16"
    assert hub.quant_of("model.gguf") == ""


def test_choose_a_file_or_name_what_the_repo_has():
    files = ["README.md", "m-Q4_K_M.gguf", "m-Q8_0.gguf", "mmproj-m-f16.gguf",
             "big/m-F16-00001-of-00002.gguf", "big/m-F16-00002-of-00002.gguf"]
    assert hub.choose("x", files, "q8_0", "") == "m-Q8_0.gguf"
    assert hub.choose("x", files, "", "") == "m-Q4_K_M.gguf"  # several: llama.cpp's default level
    assert hub.choose("x", files, "F16", "") == "big/m-F16-00001-of-00002.gguf"  # the first shard
    assert hub.choose("x", files, "", "m-Q8_0.gguf") == "m-Q8_0.gguf"
    with pytest.raises(InputError, match=r"no Q2_K model \(it has: F16, Q4_K_M, Q8_0\)"):
        hub.choose("x", files, "Q2_K", "")
    with pytest.raises(InputError, match="no file 'nope.gguf'"):
        hub.choose("x", files, "", "nope.gguf")
    with pytest.raises(InputError, match="add :QUANT"):
        hub.choose("x", ["a-Q8_0.gguf", "a-Q6_K.gguf"], "", "")
    assert hub.choose("x", ["onnx/cpu-int4/genai_config.json", "onnx/cpu-int4/model.onnx"], "", "") == "onnx/cpu-int4"
    with pytest.raises(InputError, match="holds no GGUF file"):
        hub.choose("x", ["README.md"], "", "")


def test_offline_resolution_uses_the_cache(offline_cache, real_gguf):
    for name in (f"hf://{REPO}", f"hf://{REPO}:Q4_1", f"{REPO}:q4_1", f"hf://{REPO}/SmolLM2-135M-Instruct-Q4_1.gguf"):
        found = hub.resolve(name)
        assert found.repo == REPO and found.revision == REVISION
        assert found.file == "SmolLM2-135M-Instruct-Q4_1.gguf"
        assert found.path.resolve() == real_gguf.resolve()
    with pytest.raises(InputError, match=r"no Q8_0 model \(it has: Q4_1\)"):
        hub.resolve(f"hf://{REPO}:Q8_0")
    with pytest.raises(InputError, match="not in the local Hugging Face cache .* HF_HUB_OFFLINE is set"):
        hub.resolve("hf://nobody/absent:Q4_0")


def test_an_onnx_genai_repo_resolves_to_its_folder(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "genai_config.json").write_text("{}")
    (src / "model.onnx").write_bytes(b"onnx")
    root = make_cache(tmp_path / "hf", "org/model-onnx", {
        "cpu-int4/genai_config.json": src / "genai_config.json", "cpu-int4/model.onnx": src / "model.onnx",
        "README.md": src / "genai_config.json"})
    found = hub.resolve("hf://org/model-onnx", cache_dir=root, offline=True)
    assert found.file == "cpu-int4" and (found.path / "genai_config.json").exists()
    assert hub.resolve("hf://org/model-onnx/cpu-int4", cache_dir=root, offline=True) == found
    assert hub.resolve("hf://org/model-onnx:int4", cache_dir=root, offline=True) == found


def test_a_bad_hub_name_is_one_line_and_exit_2(offline_cache, capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", "-m", f"hf://{REPO}:Q6_K", "-o", tmp_path / "out")
    assert code == 2
    assert err.strip().splitlines() == [f"edgebench: error: hf://{REPO}:Q6_K: the repo has no Q6_K model (it has: Q4_1)"]


def test_a_run_on_a_hub_name_resolves_offline_and_records_where_from(offline_cache, real_gguf, capsys, tmp_path):
    pytest.importorskip("llama_cpp")
    from edgebench.models.cache import file_sha256

    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "run", "-m", f"hf://{REPO}:Q4_1", "-p", 8, "-n", 2, "-r", 1, "-t", 1,
                             "-o", out_dir)
    assert code == 0, err
    run_json = json.loads(next(out_dir.glob("*/run.json")).read_text())
    (case,) = run_json["cases"]
    assert (case["hub_repo"], case["hub_revision"], case["hub_file"]) == (REPO, REVISION, "SmolLM2-135M-Instruct-Q4_1.gguf")
    assert case["info"]["model"]["model_sha256"] == file_sha256(real_gguf)
    assert Path(case["model"]).name == "SmolLM2-135M-Instruct-Q4_1.gguf"
    code, out, err = run_cli(capsys, "show", "latest", "-f", "csv", "-o", out_dir)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    values = dict(zip(header.split(","), row.split(",")))
    assert values["model"] == REPO  # the name the user gave; the file's general.name kept beside it
    assert values["model_name"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"  # general.name


def test_online_a_missing_level_is_listed_on_the_hub_then_fetched(offline_cache, real_gguf, monkeypatch):
    """The download branch with huggingface_hub's network calls replaced (tests never download):
    the Hub's file list is what the level is chosen from, every shard of a split GGUF is fetched."""
    import huggingface_hub
    from huggingface_hub.hf_api import RepoSibling

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    files = ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-Q4_1.gguf", "README.md"]
    info = type("Info", (), {"sha": REVISION, "siblings": [RepoSibling(rfilename=f) for f in files]})()
    fetched = []
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo: info)

    def fake_download(repo, filename, revision, cache_dir):
        fetched.append(filename)
        return str(Path(cache_dir) / "fetched" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    found = hub.resolve("hf://someone/elsewhere:Q8_0", offline=False)
    assert fetched == files[:2] and found.file == files[0] and found.revision == REVISION
    assert found.path.name == files[0]
    assert hub.resolve(f"hf://{REPO}:Q4_1", offline=False).path.resolve() == real_gguf.resolve()  # cached: no fetch
    assert len(fetched) == 2
