"""edgebench.gguf_file on real synthetic GGUFs (tiny preset) and on broken copies of them."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from edgebench.errors import InputError
from edgebench.models import synth_gguf
from edgebench.models.gguf_file import read_gguf_info, read_metadata, read_tensors, tensor_group, validate_gguf
from edgebench.models.presets import PRESETS, preset_n_params

TINY = PRESETS["tiny"]


def test_info_of_tiny_f16(tiny_gguf):
    gi = read_gguf_info(tiny_gguf["F16"])
    assert (gi.arch, gi.name, gi.synthetic_preset, gi.quant) == ("llama", "tiny", "tiny", "F16")
    assert (gi.n_layer, gi.n_embd, gi.n_head, gi.n_head_kv, gi.head_dim, gi.n_ff, gi.n_vocab, gi.n_ctx_train) == (
        TINY.n_layer, TINY.n_embd, TINY.n_head, TINY.n_head_kv, TINY.head_dim, TINY.n_ff, TINY.n_vocab, TINY.n_ctx_train)
    assert gi.n_params == preset_n_params(TINY)
    assert gi.tied is False
    assert gi.embed_params == 2 * TINY.n_embd * TINY.n_vocab  # token_embd + untied output
    assert gi.file_bytes > gi.tensor_bytes > 0
    assert 16.0 <= gi.bpw < 16.1  # F16 weights, F32 norms
    assert gi.tensor_types["attn_q"] == {"F16": TINY.n_layer}
    assert gi.tensor_types["norm"] == {"F32": 2 * TINY.n_layer + 1}
    assert gi.tensor_types["output"] == {"F16": 1}


def test_quant_label_and_bpw_follow_the_level(tiny_gguf, model_cache):
    paths = dict(tiny_gguf, Q2_K=synth_gguf.ensure_model("tiny", "Q2_K", cache=model_cache))
    info = {q: read_gguf_info(p) for q, p in paths.items()}
    assert {q: gi.quant for q, gi in info.items()} == {q: q for q in paths}
    assert info["F16"].bpw > info["Q8_0"].bpw > info["Q4_K_M"].bpw > info["Q2_K"].bpw
    assert len({gi.n_params for gi in info.values()}) == 1  # quantizing keeps every element
    assert "Q4_K" in info["Q4_K_M"].tensor_types["attn_q"]


def test_tensor_table_matches_file(tiny_gguf):
    tensors = read_tensors(tiny_gguf["F16"])
    size = tiny_gguf["F16"].stat().st_size
    assert all(t.offset + t.n_bytes <= size for t in tensors)
    assert all(t.offset % 32 == 0 for t in tensors)  # default GGUF alignment
    by = {t.name: t for t in tensors}
    assert by["token_embd.weight"].shape == (TINY.n_embd, TINY.n_vocab)
    assert by["token_embd.weight"].n_bytes == TINY.n_embd * TINY.n_vocab * 2


def test_metadata_keys(tiny_gguf):
    meta = read_metadata(tiny_gguf["Q8_0"])
    assert meta["general.architecture"] == "llama"
    assert meta[synth_gguf.KEY_PRESET] == "tiny"  # the quantizer copies our keys
    assert meta[synth_gguf.KEY_VERSION] == synth_gguf.SYNTH_VERSION
    assert len(meta["tokenizer.ggml.tokens"]) == TINY.n_vocab


def test_quant_label_falls_back_to_dominant_tensor_type(tmp_path):
    import gguf

    path = tmp_path / "bare.gguf"
    w = gguf.GGUFWriter(path, "llama")  # no general.file_type
    w.add_tensor("token_embd.weight", np.zeros((128, 32), dtype=np.float16))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    gi = read_gguf_info(path)
    assert gi.quant == "F16"  # 8 KiB of F16 outweigh 4 KiB of F32 (1-D norms do not count)
    assert gi.n_vocab == 128 and gi.tied


@pytest.mark.parametrize(("name", "group"), [
    ("blk.3.attn_q.weight", "attn_q"), ("blk.0.attn_q.bias", "bias"), ("blk.1.ffn_norm.weight", "norm"),
    ("blk.1.post_ffw_norm.weight", "norm"), ("output_norm.weight", "norm"), ("token_embd.weight", "token_embd"),
    ("output.weight", "output"), ("blk.2.attn_qkv.weight", "attn_qkv"),
])
def test_tensor_group(name, group):
    assert tensor_group(name) == group


# -- validation ----------------------------------------------------------------------------------
def _one_line_error(path, *words):
    with pytest.raises(InputError) as e:
        validate_gguf(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path.name) in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.gguf", "no such file")


def test_directory(tmp_path):
    d = tmp_path / "dir.gguf"
    d.mkdir()
    _one_line_error(d, "directory")


def test_empty_and_not_gguf(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    _one_line_error(empty, "empty")
    text = tmp_path / "notes.gguf"
    text.write_text("just some text, not a model\n")
    _one_line_error(text, "not a GGUF file")


def test_truncated(tiny_gguf, tmp_path):
    src = tiny_gguf["Q4_K_M"]
    half = tmp_path / "half.gguf"
    half.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    _one_line_error(half, "truncated", "past the end")
    header_only = tmp_path / "cut-in-header.gguf"
    header_only.write_bytes(src.read_bytes()[:300])  # inside the metadata
    _one_line_error(header_only, "truncated")


def test_unsupported_version(tiny_gguf, tmp_path):
    bad = tmp_path / "v99.gguf"
    shutil.copy(tiny_gguf["F16"], bad)
    with open(bad, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 99))
    _one_line_error(bad, "version 99", "not supported")


def test_corrupted_header(tiny_gguf, tmp_path):
    data = bytearray(tiny_gguf["F16"].read_bytes())
    counts = tmp_path / "counts.gguf"
    counts.write_bytes(data[:8] + struct.pack("<QQ", 2**40, 2**40) + data[24:])
    _one_line_error(counts, "corrupt")
    # the first metadata value's type code (after counts, key length and key) set to garbage
    key_len = struct.unpack_from("<Q", data, 24)[0]
    struct.pack_into("<I", data, 32 + key_len, 77)
    vtype = tmp_path / "vtype.gguf"
    vtype.write_bytes(bytes(data))
    _one_line_error(vtype, "corrupt", "unknown metadata value type 77")


def test_read_gguf_info_validates(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGML" + bytes(100))
    with pytest.raises(InputError, match="not a GGUF file"):
        read_gguf_info(p)
