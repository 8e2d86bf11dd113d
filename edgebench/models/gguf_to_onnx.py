"""A user's GGUF as an ONNX decoder holding the GGUF's own weights: one model in both runtimes.

The weights are dequantized to float32 with the gguf package (gguf.quants.dequantize handles
every type the GGUF ladder uses) and written by the synthetic graph builder (models.synth_onnx,
the same graph as the presets: RMSNorm, com.microsoft RotaryEmbedding + GroupQueryAttention,
SwiGLU); the other levels are quantized from that fp32 model by onnxruntime's quantizers
(synth_onnx.ensure_level, the recipes in models.onnx_quant). Supported: the llama and qwen2 architectures (SUPPORTED_ARCHS), which
are exactly what that graph computes; any other is an InputError naming these.

Rotary layout. The graph's RotaryEmbedding is non-interleaved (HF's rotate_half: dimension i
pairs with i + head_dim/2), which is what llama.cpp's qwen2 computes too (LLAMA_ROPE_TYPE_NEOX),
so qwen2 weights go in as they are. llama.cpp's llama rotates adjacent pairs (LLAMA_ROPE_TYPE_NORM),
and convert_hf_to_gguf.py permutes HF's q_proj / k_proj rows to match (LlamaModel.permute);
those rows are permuted back here (_unpermute), which gives HF's own q_proj / k_proj.

Llama 3 rope scaling (a rope_freqs tensor) and rope.scaling.type other than none are not
written by the graph: InputError rather than a model that computes something else.

Cache: ``<models_dir>/onnx-from-gguf/<source sha256[:16]>/<source stem>-<level>.onnx``, keyed like
models.requant by the source's sha256 and the level; the metadata names the source
(edgebench.source_sha256, edgebench.source_name, edgebench.requantized_from = the source's quant)
and the level's build recipe (edgebench.recipe): a build of an older recipe is rebuilt, not
reused (models.onnx_recipe).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgebench.errors import InputError
from edgebench.models.cache import file_sha256, make_dir, models_dir
from edgebench.models.gguf_file import PROVENANCE_KEYS, read_gguf_info, read_metadata, read_tensors
from edgebench.models.presets import Preset
from edgebench.models.quant_levels import ONNX_QUANTS
from edgebench.models.requant import level_name

SUPPORTED_ARCHS = ("llama", "qwen2")
Progress = Callable[[int, int], None] | None


def gguf_shape(src: Path) -> tuple[Preset, dict[str, str]]:
    """The graph shape of the GGUF ``src`` (as a Preset: the builder's input) and the metadata its
    ONNX models carry (tokenizer vocab size and special ids, provenance). InputError for an
    architecture or rope variant the graph does not compute."""
    info = read_gguf_info(src)  # validates the file (InputError)
    meta = read_metadata(src)
    arch = info.arch
    if arch not in SUPPORTED_ARCHS:
        raise InputError(f"{src.name}: architecture {arch!r} cannot be converted to ONNX; "
                         f"supported: {', '.join(SUPPORTED_ARCHS)}")
    scaling = str(meta.get(f"{arch}.rope.scaling.type", "none"))
    names = {t.name for t in read_tensors(src)}
    if scaling not in ("none", "") or "rope_freqs.weight" in names:
        raise InputError(f"{src.name}: rope scaling ({scaling if scaling != 'none' else 'rope_freqs'}) "
                         "is not supported by the ONNX graph builder")
    rot = int(meta.get(f"{arch}.rope.dimension_count", info.head_dim) or info.head_dim)
    name = info.name or level_name(src, "x")[: -len("-x.gguf")]
    preset = Preset(
        name, arch, info.n_embd, info.n_layer, info.n_head, info.n_head_kv, info.head_dim, info.n_ff,
        info.n_vocab, bool(info.tied), info.n_ctx_train, float(info.n_params), f"GGUF {src.name}",
        qkv_bias="blk.0.attn_q.bias" in names,
        rope_theta=float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        norm_eps=float(meta.get(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        partial_rotary=rot / info.head_dim)
    carried = {"edgebench.synthetic": "0", "edgebench.n_vocab": str(info.n_vocab),
               PROVENANCE_KEYS["requantized_from"]: info.quant, PROVENANCE_KEYS["source_name"]: src.name}
    for key in ("bos", "eos", "padding", "unknown"):
        v = meta.get(f"tokenizer.ggml.{key}_token_id")
        if v is not None:
            carried[f"edgebench.{key}_token_id"] = str(int(v))
    # The backend reads edgebench.bos_token_id as "the model adds this BOS" (the quality pass puts
    # it first in each chunk), so it is kept only where llama.cpp adds one (add_bos_token).
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True))
    carried["edgebench.add_bos_token"] = "1" if add_bos else "0"
    if not add_bos:
        carried.pop("edgebench.bos_token_id", None)
    return preset, carried


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of convert_hf_to_gguf.py LlamaModel.permute: rows h*hd + 2*i + j back to
    h*hd + j*hd/2 + i (w: [rows, ...], rows = n_head * head_dim; biases too)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_weights(src: Path, p: Preset) -> Callable[[str, tuple[int, ...]], np.ndarray]:
    """(onnx weight name, shape) -> float32 array from the GGUF ``src``: dequantized, transposed to
    the [in, out] layout ONNX MatMul takes, llama's Q/K rows un-permuted (module docstring)."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str) -> np.ndarray:
        t = tensors[name]
        # numpy order: [rows = ne[1], row length = ne[0]]: HF's [out, in]
        return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
            [int(d) for d in reversed(t.shape)])

    def q_or_k(w: np.ndarray, heads: int) -> np.ndarray:
        return _unpermute(w, heads) if p.arch == "llama" else w

    def weight(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name == "model.embed_tokens.weight":
            return get("token_embd.weight")
        if name == "model.norm.weight":
            return get("output_norm.weight")
        if name == "lm_head.weight":
            return get("output.weight").T
        _, _, i, *rest = name.split(".")
        blk, what = f"blk.{i}.", ".".join(rest)
        simple = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight"}
        if what in simple:
            return get(blk + simple[what])
        proj = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down"}
        stem, kind = what.rsplit(".", 1)
        w = get(f"{blk}{proj[stem]}.{kind}")
        if stem in ("self_attn.q_proj", "self_attn.k_proj"):
            w = q_or_k(w, p.n_head if stem == "self_attn.q_proj" else p.n_head_kv)
        return w.T if kind == "weight" else w

    return weight


def write_onnx_from_gguf(src: Path, path: Path, progress: Progress = None, sha256: str = "") -> Path:
    """Write the fp32 ONNX decoder of the GGUF ``src`` to ``path``. Blocks (seconds for 135M)."""
    from edgebench.models.synth_onnx import write_onnx

    preset, carried = gguf_shape(src)
    carried[PROVENANCE_KEYS["source_sha256"]] = sha256 or file_sha256(src)
    return write_onnx(preset, path, progress=progress, weights=gguf_weights(src, preset), metadata=carried)


def onnx_dir(sha256: str, cache: Path | None = None) -> Path:
    """Folder of one source's ONNX levels: ``<models_dir>/onnx-from-gguf/<sha256[:16]>``."""
    return models_dir(cache) / "onnx-from-gguf" / sha256[:16]


def ensure_onnx_from_gguf(src: str | Path, quant: str, cache: Path | None = None,
                          progress: Progress = None) -> Path:
    """Path of the GGUF ``src`` as an ONNX decoder at ``quant`` (an ONNX level), built first if the
    cache lacks it; the fp32 level is built first for the others. InputError for a file or an
    architecture that cannot be converted. Blocks."""
    from edgebench.models.synth_onnx import ensure_level

    src = Path(src).expanduser()
    q = ONNX_QUANTS.check(quant)
    gguf_shape(src)  # bad input fails before anything is written
    sha = file_sha256(src)
    d = make_dir(onnx_dir(sha, cache))
    target = d / level_name(src, q).replace(".gguf", ".onnx")
    return ensure_level(target, q, lambda out: write_onnx_from_gguf(src, out, progress, sha),
                        lambda: ensure_onnx_from_gguf(src, "fp32", cache, progress), progress)
