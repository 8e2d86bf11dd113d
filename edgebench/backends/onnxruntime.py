"""ONNX Runtime backend: decoder graphs with KV-cache inputs (Optimum / onnxruntime-genai layout).

The graph is read, not assumed (edgebench.backends.onnx_graph): ``input_ids``, ``attention_mask``,
optional ``position_ids`` (and ``use_cache_branch`` of Optimum's merged decoders) and
``past_key_values.N.key|value`` in; ``logits`` and ``present.N.key|value`` out. The KV cache never
leaves the runtime: each run's present OrtValues are bound, through IO binding, as the next run's
past inputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edgebench.backends.base import Backend, MemoryInfo, ModelInfo, OpEvent, OpTracer
from edgebench.backends.op_classes import classify_onnx
from edgebench.errors import InputError
from edgebench.models.onnx_file import count_weights, infer_quant, read_layout
from edgebench.models.synth_onnx import ONNX_QUANT_LEVELS, ensure_onnx_model
from edgebench.records import Case

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}
_FOLDER_MODELS = ("model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx")


def resolve_model_file(model: str) -> Path:
    """The .onnx file of ``model`` (a file, or a folder holding one). InputError if none."""
    p = Path(model).expanduser()
    if not p.exists():
        raise InputError(f"model {model} does not exist")
    if not p.is_dir():
        return p
    for name in _FOLDER_MODELS:
        if (p / name).is_file():
            return p / name
    found = sorted(p.glob("*.onnx"))
    if len(found) != 1:
        raise InputError(f"folder {p} holds {len(found)} .onnx files; expected model.onnx or exactly one")
    return found[0]


def _activation_rows(args: dict[str, Any]) -> int:
    """Rows (tokens) of a matmul's first input from the profiler's input_type_shape."""
    shapes = args.get("input_type_shape") or []
    if not shapes:
        return 0
    shape = next(iter(shapes[0].values()), [])
    if len(shape) < 2:
        return 1
    # [M, K] / [B, S, K]: all rows; [B, H, S, D] (per-head attention products): S
    return math.prod(shape[:-1]) if len(shape) <= 3 else shape[-2]


_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeBackend(Backend, OpTracer):
    name = "onnxruntime"
    capabilities = frozenset({"ops", "kv_bytes"})
    suffixes = (".onnx", "")
    quant_levels = ONNX_QUANT_LEVELS
    default_ladder = ("fp32", "int8", "int4-b32")

    @classmethod
    def build_synthetic(cls, preset: str, quant: str, progress=None) -> str:
        return str(ensure_onnx_model(preset, quant, progress=progress))

    def __init__(self) -> None:
        self._sess = self._plain = None
        self._trace_dir: str | None = None

    # ---- loading -------------------------------------------------------------------------
    def load(self, case: Case) -> ModelInfo:
        path = resolve_model_file(case.model)
        try:
            model = onnx.load_model(str(path), load_external_data=False)
        except Exception as e:  # protobuf raises several types for garbage
            raise InputError(f"{path} is not an ONNX model: {type(e).__name__}: {e}".splitlines()[0]) from None
        graph = model.graph
        if not model.ir_version or not graph.node:
            raise InputError(f"{path} is not an ONNX model (no graph)")
        g = read_layout(path, graph)
        # Flat attributes, not self._layout.x: _run reads several of them on every decode step.
        self._n_layer, self._n_kv, self._head_dim, self._kv_dtype = g.n_layer, g.n_kv, g.head_dim, g.kv_dtype
        self._past_names, self._out_names, self._kv_shared = g.past_names, g.out_names, g.kv_shared
        self._has_pos, self._has_branch = g.has_pos, g.has_branch
        self._vocab, self._logits_itemsize, self._embd, self._gqa_heads = g.vocab, g.logits_itemsize, g.embd, g.gqa_heads
        n_params, n_bytes, ops = count_weights(graph)
        meta = {e.key: e.value for e in model.metadata_props}
        quant = meta.get("edgebench.quant") or infer_quant(graph, ops)
        config = self._hf_config(path)
        del model, graph

        provider = _PROVIDERS.get(case.ep)
        available = ort.get_available_providers()
        if provider is None or provider not in available:
            raise InputError(f"execution provider {case.ep!r} is not available in this onnxruntime; "
                             f"available: {', '.join(available)}")
        self._providers = [provider] + (["CUDAExecutionProvider"] if case.ep == "tensorrt" else [])
        self._device = "cpu" if case.ep == "cpu" else "cuda"
        self._path, self._case = path, case
        self._kv_bufs = [ort.OrtValue.ortvalue_from_numpy(  # zeros: never read unmasked, but finite
            np.zeros((1, self._n_kv, case.ctx_effective, self._head_dim), self._kv_dtype), self._device, 0)
            for _ in self._past_names] if self._kv_shared else []
        self._use(self._session(profile=False))
        got = self._sess.get_providers()
        if got[0] != provider:
            raise RuntimeError(f"onnxruntime did not start {provider} (session runs on {', '.join(got)})")
        self._model_bytes = n_bytes
        self._grow_feeds(case.ctx_effective)
        self.reset()

        def fact(key: str, cfg: str, default: int = 0) -> int:
            return int(meta.get(f"edgebench.{key}") or config.get(cfg) or default)

        n_head = fact("n_head", "num_attention_heads", self._gqa_heads)
        n_embd = fact("n_embd", "hidden_size", self._embd)
        return ModelInfo(
            model_name=meta.get("edgebench.preset") or config.get("_name_or_path") or path.stem,
            arch=meta.get("edgebench.arch") or config.get("model_type") or "decoder",
            quant=quant, bpw=n_bytes * 8 / n_params if n_params else 0.0, n_params=n_params,
            model_bytes=n_bytes, n_layer=self._n_layer, n_embd=n_embd, n_head=n_head,
            n_head_kv=self._n_kv, head_dim=self._head_dim,
            n_vocab=fact("n_vocab", "vocab_size", self._vocab),
            n_ctx_train=fact("n_ctx_train", "max_position_embeddings"),
            n_ctx_runtime=case.ctx_effective,
            extra={"ep": case.ep, "providers": got, "file": str(path), "kv_dtype": self._kv_dtype.name,
                   # a tied lm_head is stored twice in ONNX: n_params counts it twice
                   "n_params_tied_copy": n_embd * self._vocab if meta.get("edgebench.tied") == "1" else 0,
                   "n_ubatch_ignored": True,
                   "kv_cache": "shared-buffer" if self._kv_shared else "concat",
                   "external_data": any(path.parent.glob(path.name + ".data"))},
        )

    @staticmethod
    def _hf_config(path: Path) -> dict[str, Any]:
        cfg = path.parent / "config.json"
        try:
            return json.loads(cfg.read_text()) if cfg.is_file() else {}
        except (OSError, ValueError):
            return {}

    def _session(self, profile: bool) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._case.n_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[self._case.graph_opt])
        so.log_severity_level = 3
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self._trace_dir, "ort")
        return ort.InferenceSession(str(self._path), so, providers=self._providers)

    def _use(self, sess: ort.InferenceSession) -> None:
        # The pybind objects under onnxruntime's Python wrappers: the wrappers' checks and object
        # creation cost ~2x per bound name, and a decode step binds 2 * n_layer + 4 of them.
        self._sess, self._binding = sess, sess.io_binding()
        self._c_sess, self._c_bind = sess._sess, self._binding._iobinding
        self._c_dev = ort.OrtDevice.make(self._device, 0)._get_c_device()
        self._c_bind.bind_output("logits", self._c_dev)  # first: get_outputs()[0] is the logits
        for i, buf in enumerate(self._kv_bufs):
            self._c_bind.bind_ortvalue_input(self._past_names[i], buf._ortvalue)
            self._c_bind.bind_ortvalue_output(self._out_names[i + 1], buf._ortvalue)

    def _grow_feeds(self, n: int) -> None:
        # Preallocated mask / position rows: each run binds a contiguous slice, no per-step array.
        self._mask = np.ones((1, n), np.int64)
        self._positions = np.arange(n, dtype=np.int64)[None, :]
        self._branch = np.ones(1, np.bool_)

    # ---- running -------------------------------------------------------------------------
    def reset(self) -> None:
        self._n_past, self._logits = 0, None
        if self._kv_shared:
            return
        self._empty = ort.OrtValue.ortvalue_from_numpy(
            np.zeros((1, self._n_kv, 0, self._head_dim), self._kv_dtype), self._device, 0)
        self._past = [self._empty._ortvalue] * len(self._past_names)

    def _run(self, tokens: Sequence[int]) -> None:
        n, start = len(tokens), self._n_past
        total = start + n
        if total > self._mask.shape[1]:
            if self._kv_shared:
                raise RuntimeError(f"the KV cache holds {self._mask.shape[1]} tokens (n_ctx); {total} asked")
            self._grow_feeds(2 * total)
        b = self._c_bind  # binds numpy memory without a copy: keep the arrays alive
        self._ids = np.asarray(tokens, np.int64).reshape(1, n)
        b.bind_input("input_ids", self._ids)
        b.bind_input("attention_mask", self._mask[:, :total])
        if self._has_pos:
            b.bind_input("position_ids", self._positions[:, start:total])
        if self._has_branch:
            b.bind_input("use_cache_branch", self._branch)
        if self._kv_shared:
            b.bind_output("logits", self._c_dev)
        else:
            for name, value in zip(self._past_names, self._past):
                b.bind_ortvalue_input(name, value)
            for name in self._out_names:  # no shape: onnxruntime allocates the grown present
                b.bind_output(name, self._c_dev)
        self._c_sess.run_with_iobinding(b, None)
        if self._device != "cpu":
            b.synchronize_outputs()
        outs = b.get_outputs()
        self._logits, self._n_past = outs[0], total
        if not self._kv_shared:
            self._past = list(outs)[1:]
        if self._trace_dir is not None:
            self._traced_runs += 1

    def prefill(self, tokens: Sequence[int]) -> None:
        """Run ``tokens`` after the cache in chunks of n_batch (one session run each). Blocks."""
        step = self._case.n_batch
        for i in range(0, len(tokens), step):
            self._run(tokens[i:i + step])

    def decode_step(self, token: int) -> None:
        """One token after the cache: one session run. Blocks."""
        self._run((token,))

    def last_logits(self) -> np.ndarray:
        """Logits [n_vocab] of the last token processed (a copy to host; not for timed code)."""
        return self._logits.numpy()[0, -1].copy()

    # ---- memory / versions ---------------------------------------------------------------
    def _buffer(self) -> str:
        return "CPU" if self._device == "cpu" else "CUDA0"

    def memory(self) -> MemoryInfo:
        """Initializer bytes of the file; the KV cache that ctx_effective tokens occupy; the logits
        tensor of one n_batch chunk. Compute buffers are unknown to the Python API."""
        buf = self._buffer()
        per_token = 2 * self._n_layer * self._n_kv * self._head_dim * self._kv_dtype.itemsize
        chunk = min(self._case.n_batch, self._case.n_prompt)
        return MemoryInfo(
            weights_by_buffer={buf: self._model_bytes},
            kv_by_buffer={buf: per_token * self._case.ctx_effective},
            compute_by_buffer={},
            output_by_buffer={buf: chunk * self._vocab * self._logits_itemsize} if self._vocab else {},
        )

    def kv_used_bytes(self) -> int | None:
        """Bytes of K/V of the tokens in the cache (concat mode: of the present tensors held)."""
        if self._kv_shared:
            return 2 * self._n_layer * self._n_kv * self._head_dim * self._kv_dtype.itemsize * self._n_past
        return sum(math.prod(v.shape()) for v in self._past) * self._kv_dtype.itemsize

    def versions(self) -> dict[str, str]:
        out = {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
               "providers_available": ",".join(ort.get_available_providers()), "device": ort.get_device()}
        if hasattr(ort, "get_build_info"):
            out["build_info"] = ort.get_build_info()
        return out

    def close(self) -> None:
        if self._trace_dir:
            shutil.rmtree(self._trace_dir, ignore_errors=True)
            self._trace_dir = None
        self._sess = self._plain = self._binding = self._c_sess = self._c_bind = None
        self._past, self._kv_bufs, self._logits = [], [], None

    # ---- ops tracing ---------------------------------------------------------------------
    def ops_begin(self) -> None:
        """Switch to a second session built with onnxruntime's profiler on (cache emptied)."""
        self._trace_dir = tempfile.mkdtemp(prefix="edgebench-ort-profile-")
        self._plain = self._sess
        self._use(self._session(profile=True))
        self._marks: list[tuple[int, str, int]] = []
        self._traced_runs = 0
        self.reset()

    def ops_mark(self, phase: str, rep: int) -> None:
        """Nodes of runs starting after now belong to (phase, rep). Wall clock, like ORT's profiler."""
        self._marks.append((time.time_ns(), phase, rep))

    def ops_end(self) -> list[OpEvent]:
        """Stop profiling, restore the plain session (cache emptied) and return the node events."""
        trace = self._sess.end_profiling()
        start_ns = self._sess.get_profiling_start_time_ns()
        try:
            with open(trace) as f:
                events = json.load(f)
        finally:
            shutil.rmtree(self._trace_dir, ignore_errors=True)
            self._trace_dir = None
            self._use(self._plain)
            self._plain = None
            self.reset()
        return self._attribute(events, start_ns)

    def _attribute(self, events: list[dict], start_ns: int) -> list[OpEvent]:
        marks = sorted(self._marks)
        mark_t = [t for t, _, _ in marks]

        def label(abs_ns: int) -> tuple[str, int] | None:
            i = int(np.searchsorted(mark_t, abs_ns, side="right")) - 1
            return (marks[i][1], marks[i][2]) if i >= 0 else None

        # A whole run belongs to the window its start falls in: node timestamps near a mark
        # cannot then be split from their run.
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run")
        if len(runs) < self._traced_runs:
            warnings.warn(f"onnxruntime's profiler recorded {len(runs)} of {self._traced_runs} runs "
                          "(its event buffer is full): op times are partial", stacklevel=2)
        run_start = [r[0] for r in runs]
        out = []
        for e in events:
            if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
                continue
            j = int(np.searchsorted(run_start, e["ts"], side="right")) - 1
            ts = runs[j][0] if j >= 0 and e["ts"] <= runs[j][1] else e["ts"]
            lab = label(start_ns + ts * 1000)
            if lab is None:
                continue
            args = e.get("args", {})
            op = args.get("op_name", "")
            out.append(OpEvent(phase=lab[0], rep=lab[1], op=op, op_class=classify_onnx(op, _activation_rows(args)),
                               name=e["name"][: -len("_kernel_time")], ns=int(e["dur"]) * 1000))
        return out
