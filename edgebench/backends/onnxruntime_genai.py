"""onnxruntime-genai backend: a model folder with genai_config.json, run the way genai runs it.

onnxruntime-genai (the optional ``genai`` extra) owns the session, the KV cache (one buffer per
layer preallocated for max_length when search.past_present_share_buffer is on, as its builder sets
it for GroupQueryAttention models) and the bookkeeping around each run (positions, mask, copying
out the last token's logits). edgebench drives its Generator and nothing else:

- ``append_tokens(ids)`` runs the decoder over ``ids`` before it returns (Generator::AppendTokens
  -> ComputeLogits -> OrtSession::Run, which synchronizes the execution provider). prefill is one
  call per n_batch chunk; a decode step is one call with the worker's random id.
- ``generate_next_token`` is never called: no sampling, no logits processing in the timed region.
- ``rewind_to(0)`` empties the cache: with a shared buffer it only resets the lengths (the stale
  entries are masked out, as in the plain onnxruntime backend); without one it drops the tensors.

onnx and onnxruntime_genai are imported when a model is loaded, not with this module.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.backends.base import Backend, MemoryInfo, ModelInfo
from edgebench.backends.onnx_load import kv_bytes_per_token, model_info, read_onnx
from edgebench.errors import InputError
from edgebench.models.quant_levels import ONNX_QUANTS
from edgebench.models.synth_genai import GENAI_CONFIG
from edgebench.records import Case

# Found, not imported (backend_class turns this into "backend ... is not available").
for _runtime, _extra in (("onnx", ""), ("onnxruntime_genai", " (install the extra: pip install 'edgebench[genai]')")):
    if importlib.util.find_spec(_runtime) is None:
        raise ImportError(f"No module named {_runtime!r}{_extra}")

# --ep -> genai provider name (None: no provider appended, genai runs on CPU). genai has no plain
# TensorRT provider (its NvTensorRtRtx is TensorRT-RTX, another EP).
_PROVIDERS: dict[str, str | None] = {"cpu": None, "cuda": "cuda"}


def _read_config(model: str) -> tuple[Path, dict[str, Any]]:
    """(folder, parsed genai_config.json). InputError unless ``model`` is such a folder."""
    folder = Path(model).expanduser()
    if not folder.exists():
        raise InputError(f"model {model} does not exist")
    if not (folder / GENAI_CONFIG).is_file():
        raise InputError(f"{folder} is not an onnxruntime-genai model: expected a folder holding {GENAI_CONFIG}")
    try:
        cfg = json.loads((folder / GENAI_CONFIG).read_text())
        cfg["model"]["decoder"]["filename"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{folder / GENAI_CONFIG} is not a genai config: {type(e).__name__}: {e}") from None
    return folder, cfg


def _ort_version() -> str:
    """Version of the onnxruntime distribution whose shared library genai loaded (ORT_LIB_PATH).
    Read from package metadata: importing onnxruntime's Python module would load a second copy of
    the runtime into the measured process."""
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-qnn"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


class OnnxRuntimeGenaiBackend(Backend):
    name = "onnxruntime-genai"
    capabilities = frozenset({"kv_bytes"})
    suffixes = ("",)
    quants = ONNX_QUANTS

    @classmethod
    def build_synthetic(cls, preset: str, quant: str, progress=None) -> str:
        from edgebench.models.synth_genai import write_genai_folder

        return str(write_genai_folder(preset, quant, progress=progress))

    def __init__(self) -> None:
        self._model = self._params = self._gen = None

    # ---- loading -------------------------------------------------------------------------
    def load(self, case: Case) -> ModelInfo:
        import onnxruntime_genai as og

        folder, cfg = _read_config(case.model)
        decoder = cfg["model"]["decoder"]
        if case.ep not in _PROVIDERS:
            raise InputError(f"execution provider {case.ep!r} is not available in onnxruntime-genai; "
                             f"it runs: {', '.join(_PROVIDERS)}")
        if case.ep == "cuda" and not og.is_cuda_available():
            raise InputError("execution provider 'cuda' is not available in this onnxruntime-genai "
                             "(install onnxruntime-genai-cuda)")
        context_length = int(cfg["model"].get("context_length") or 0)
        ctx = case.ctx_effective
        if context_length and ctx > context_length:
            raise InputError(f"context {ctx} exceeds the model's context_length {context_length} ({GENAI_CONFIG})")

        path = folder / decoder["filename"]
        if not path.is_file():
            raise InputError(f"{folder / GENAI_CONFIG} names decoder {decoder['filename']!r}, which {folder} lacks")
        f, _ = read_onnx(path, lambda graph: self._read_layout(path, graph, decoder))

        config = og.Config(str(folder))
        config.clear_providers()
        if _PROVIDERS[case.ep]:
            config.append_provider(_PROVIDERS[case.ep])
        # Same session settings as the plain onnxruntime backend: n_threads intra-op, one inter-op.
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": case.n_threads, "inter_op_num_threads": 1, "log_severity_level": 3}}}}))
        self._model = og.Model(config)
        device = self._model.device_type
        if device.lower() != case.ep:
            raise RuntimeError(f"onnxruntime-genai did not start {case.ep} (model runs on {device})")
        self._params = og.GeneratorParams(self._model)
        # One sequence, no beams; the cache is allocated for the case's context.
        self._params.set_search_options(max_length=ctx, batch_size=1, num_beams=1, do_sample=False)
        search = self._params.get_search_options()
        self._kv_shared = bool(search["past_present_share_buffer"])
        self._gen = og.Generator(self._model, self._params)
        self._case, self._device = case, device
        self._model_bytes = f.n_bytes
        self._one = np.zeros(1, np.int32)  # a decode step's input, reused (genai copies it)

        info = model_info(
            f, name=folder.name, arch=cfg["model"].get("type"), configs=[decoder, cfg["model"]],
            n_layer=self._n_layer, n_head_kv=self._n_kv, head_dim=self._head_dim, kv_dtype=self._kv_dtype,
            kv_shared=self._kv_shared, n_ctx_runtime=ctx, ep=case.ep, providers=[device],
            config_keys={"n_ctx_train": "context_length"}, extra={"genai_model_type": cfg["model"].get("type", "")})
        self._n_vocab = info.n_vocab
        return info

    def _read_layout(self, path: Path, graph, decoder: dict[str, Any]) -> None:
        """n_layer / n_head_kv / head_dim / KV dtype from the graph's past inputs, named as the
        config names them (they must agree with the config, which genai sizes its cache from);
        the logits dtype. Keeps plain values only."""
        import onnx

        from edgebench.models.onnx_file import value_shape

        pattern = decoder.get("inputs", {}).get("past_key_names", "past_key_values.%d.key")
        inputs = {vi.name: vi for vi in graph.input}
        n_layer = 0
        while pattern % n_layer in inputs:
            n_layer += 1
        if not n_layer:
            raise InputError(f"{path} is not a decoder with KV-cache inputs: no input {pattern % 0}")
        first = inputs[pattern % 0]
        shape = value_shape(first)
        if len(shape) != 4:
            raise InputError(f"{path}: {first.name} has shape {shape}; expected [batch, n_head_kv, seq, head_dim]")
        graph_facts = {"num_hidden_layers": n_layer, "num_key_value_heads": shape[1], "head_size": shape[3]}
        for key, got in graph_facts.items():
            want = decoder.get(key)
            if got and want is not None and int(want) != got:
                raise InputError(f"{GENAI_CONFIG} says {key} = {want} but {path.name} has {got}")
            graph_facts[key] = got or int(want or 0)
        self._n_layer, self._n_kv, self._head_dim = graph_facts.values()
        if not (self._n_kv and self._head_dim):
            raise InputError(f"{path}: cannot read n_head_kv / head_dim from {first.name} or {GENAI_CONFIG}")
        self._kv_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(first.type.tensor_type.elem_type))
        logits_name = decoder.get("outputs", {}).get("logits", "logits")
        types = [o.type.tensor_type.elem_type for o in graph.output if o.name == logits_name]
        self._logits_itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(types[0])).itemsize if types else 4

    # ---- running -------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the cache: rewind the generator to length 0 (O(1) with a shared buffer; a fresh
        Generator would allocate and zero a max_length cache again)."""
        self._gen.rewind_to(0)

    def prefill(self, tokens: Sequence[int]) -> None:
        """Run ``tokens`` after the cache, one append_tokens (one session run) per n_batch chunk.
        Blocks: append_tokens returns when the run is done."""
        step = self._case.n_batch
        for i in range(0, len(tokens), step):
            self._gen.append_tokens(np.asarray(tokens[i:i + step], np.int32))

    def decode_step(self, token: int) -> None:
        """One token after the cache: one append_tokens of ``token`` (never a sampled one). Blocks."""
        self._one[0] = token
        self._gen.append_tokens(self._one)

    def last_logits(self) -> np.ndarray:
        """Logits [n_vocab] of the last token processed (a copy to host; not for timed code).
        Only the tests call it: they check genai's cache against the plain backend with it."""
        return np.asarray(self._gen.get_logits()).reshape(-1).copy()

    # ---- memory / versions ---------------------------------------------------------------
    def _per_token_kv(self) -> int:
        return kv_bytes_per_token(self._n_layer, self._n_kv, self._head_dim, self._kv_dtype)

    def memory(self) -> MemoryInfo:
        """Initializer bytes of the decoder; the KV cache of max_length = ctx_effective tokens (what
        genai allocates up front with a shared buffer, and what a concat cache grows to); the
        logits of one n_batch chunk. Compute buffers are unknown to the API."""
        buf = "CPU" if self._device.lower() == "cpu" else "CUDA0"
        chunk = min(self._case.n_batch, self._case.n_prompt)
        n_vocab = self._n_vocab
        return MemoryInfo(
            weights_by_buffer={buf: self._model_bytes},
            kv_by_buffer={buf: self._per_token_kv() * self._case.ctx_effective},
            compute_by_buffer={},
            output_by_buffer={buf: chunk * n_vocab * self._logits_itemsize} if n_vocab else {},
        )

    def kv_used_bytes(self) -> int | None:
        """Bytes of K/V of the tokens in the cache (the generator's token count)."""
        return self._per_token_kv() * self._gen.token_count()

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime_genai as og

        return {"onnxruntime-genai": og.__version__, "onnxruntime-genai_commit": getattr(og, "__commit__", ""),
                "onnxruntime": _ort_version(), "onnxruntime_lib": os.environ.get("ORT_LIB_PATH", ""),
                "onnx": onnx.__version__,
                "cuda_available": str(og.is_cuda_available())}

    def close(self) -> None:
        # The generator holds the model's session state: drop it first.
        self._gen = None
        self._params = None
        self._model = None
