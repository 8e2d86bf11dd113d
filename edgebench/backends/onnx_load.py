"""What both ONNX backends (onnxruntime, onnxruntime-genai) do alike when they load a decoder:
read the .onnx file without its external data (metadata, weight count and bytes, quant), and turn
that, the graph's KV layout and the model's config into ModelInfo.

onnx is imported inside the functions, so importing a backend module loads no runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgebench.backends.base import ModelInfo
from edgebench.errors import InputError

T = TypeVar("T")

# ModelInfo field -> the config key that says it (Hugging Face config.json names; genai's
# genai_config.json uses the same ones except context_length).
CONFIG_KEYS = {"n_head": "num_attention_heads", "n_embd": "hidden_size", "n_vocab": "vocab_size",
               "n_ctx_train": "max_position_embeddings", "n_ff": "intermediate_size"}


@dataclass(frozen=True)
class OnnxFile:
    """The header facts of one .onnx file (its graph is not kept: it holds the inline weights)."""

    path: Path
    meta: dict[str, str]  # metadata_props (edgebench.* on synthetic models)
    n_params: int  # see models.onnx_file.count_weights
    n_bytes: int  # initializer bytes, external data included
    quant: str  # edgebench.quant, else inferred from the graph's ops and initializer types


def read_onnx(path: Path, layout: Callable[[Any], T]) -> tuple[OnnxFile, T]:
    """Parse ``path`` without external data and call ``layout(graph)`` for what the backend reads
    of the graph before the graph is dropped. InputError (one line) when it is not an ONNX model."""
    import onnx

    from edgebench.models.onnx_file import count_weights, infer_quant

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for garbage
        raise InputError(f"{path} is not an ONNX model: {type(e).__name__}: {e}".splitlines()[0]) from None
    graph = model.graph
    if not model.ir_version or not graph.node:
        raise InputError(f"{path} is not an ONNX model (no graph)")
    got = layout(graph)
    n_params, n_bytes, ops = count_weights(graph)
    meta = {e.key: e.value for e in model.metadata_props}
    quant = meta.get("edgebench.quant") or infer_quant(graph, ops)
    del model, graph  # no reference into the proto may outlive this call: it keeps the weights alive
    return OnnxFile(path, meta, n_params, n_bytes, quant), got


def read_hf_config(path: Path) -> dict[str, Any]:
    """The Hugging Face config.json beside ``path`` ({} when there is none or it is unreadable)."""
    cfg = path.parent / "config.json"
    try:
        return json.loads(cfg.read_text()) if cfg.is_file() else {}
    except (OSError, ValueError):
        return {}


def model_info(f: OnnxFile, *, name: str, arch: str, configs: Sequence[Mapping[str, Any]], n_layer: int,
               n_head_kv: int, head_dim: int, kv_dtype: np.dtype, kv_shared: bool, n_ctx_runtime: int, ep: str,
               providers: list[str], fallbacks: Mapping[str, int] | None = None,
               config_keys: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> ModelInfo:
    """ModelInfo of a loaded ONNX decoder. Each dimension the graph does not fix is the file's
    edgebench.<field> metadata, else the first of ``configs`` that holds it (``config_keys``
    overriding CONFIG_KEYS), else ``fallbacks`` (what the graph suggests), else 0."""
    keys = CONFIG_KEYS | dict(config_keys or {})

    def fact(field: str) -> int:
        for v in (f.meta.get(f"edgebench.{field}"), *(c.get(keys[field]) for c in configs), (fallbacks or {}).get(field)):
            if v:
                return int(v)
        return 0

    tied = {"1": True, "0": False}.get(f.meta.get("edgebench.tied", ""))
    if tied is None:
        tied = next((bool(c["tie_word_embeddings"]) for c in configs if "tie_word_embeddings" in c), None)
    n_embd, n_vocab = fact("n_embd"), fact("n_vocab")
    return ModelInfo(
        name=f.meta.get("edgebench.preset") or name, arch=f.meta.get("edgebench.arch") or arch or "decoder",
        quant=f.quant, bpw=f.n_bytes * 8 / f.n_params if f.n_params else 0.0, n_params=f.n_params,
        model_bytes=f.n_bytes, n_layer=n_layer, n_embd=n_embd, n_head=fact("n_head"), n_head_kv=n_head_kv,
        head_dim=head_dim, n_ff=fact("n_ff"), n_vocab=n_vocab, tied=tied, n_ctx_train=fact("n_ctx_train"),
        n_ctx_runtime=n_ctx_runtime,
        extra={"ep": ep, "providers": providers, "file": str(f.path), "kv_dtype": kv_dtype.name,
               # a tied lm_head stored twice (not shared by models.onnx_tied): n_params counts it twice
               "n_params_tied_copy": n_embd * n_vocab if f.meta.get("edgebench.tied") == "1"
               and f.meta.get("edgebench.tied_shared") != "1" else 0,
               "n_ubatch_ignored": True, **(extra or {}),
               # a GGUF converted by models.gguf_to_onnx names its source, as a requantized GGUF does
               **{k: f.meta[f"edgebench.{k}"] for k in ("requantized_from", "source_sha256", "source_name")
                  if f"edgebench.{k}" in f.meta},
               "kv_cache": "shared-buffer" if kv_shared else "concat",
               "external_data": any(f.path.parent.glob(f.path.name + ".data"))},
    )


def kv_bytes_per_token(n_layer: int, n_head_kv: int, head_dim: int, kv_dtype: np.dtype) -> int:
    """Bytes of K and V one token takes in the runtime's cache, over all layers."""
    return 2 * n_layer * n_head_kv * head_dim * kv_dtype.itemsize
