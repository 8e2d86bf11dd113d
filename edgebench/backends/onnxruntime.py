"""ONNX Runtime backend: decoder graphs with KV-cache inputs (Optimum / onnxruntime-genai layout).

The graph is read, not assumed: ``input_ids``, ``attention_mask``, optional ``position_ids``
(and ``use_cache_branch`` of Optimum's merged decoders) and ``past_key_values.N.key|value`` in;
``logits`` and ``present.N.key|value`` out. The KV cache never leaves the runtime: each run's
present OrtValues are bound, through IO binding, as the next run's past inputs.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from edgebench.backends.base import Backend, MemoryInfo, ModelInfo, OpEvent, OpTracer
from edgebench.errors import InputError
from edgebench.ops_taxonomy import classify_onnx
from edgebench.records import Case
from edgebench.synth_onnx import ONNX_QUANT_LEVELS, ensure_onnx_model

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}
_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_PRESENT = re.compile(r"^present\.(\d+)\.(key|value)$")
_FEEDABLE = {"input_ids", "attention_mask", "position_ids", "use_cache_branch"}
_FOLDER_MODELS = ("model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx")
_PARAM_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
# Inputs of quantized ops that hold scales / zero points / indices, not parameters.
_QUANT_AUX = {"MatMulNBits": (2, 3, 4), "MatMulInteger": (2, 3), "DynamicQuantizeMatMul": (2, 3),
              "MatMulIntegerToFloat": (2, 3, 4, 5), "DequantizeLinear": (1, 2), "QuantizeLinear": (1, 2),
              "GatherBlockQuantized": (2, 3)}
_INT8_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul"}


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


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        ext = {e.key: e.value for e in t.external_data}
        if "length" in ext:
            return int(ext["length"])
    elif t.raw_data:
        return len(t.raw_data)
    n = math.prod(t.dims)
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _weights(graph: onnx.GraphProto) -> tuple[int, int, dict[str, int]]:
    """(n_params, bytes, op counts). Packed 4-bit weights count their unpacked K*N elements;
    scales, zero points, scalars and integer shape constants are bytes but not parameters."""
    aux: set[str] = set()
    unpacked: dict[str, int] = {}
    ops: dict[str, int] = {}
    for n in graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
        aux.update(n.input[i] for i in _QUANT_AUX.get(n.op_type, ()) if i < len(n.input))
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "MatMulNBits":
            unpacked[n.input[1]] = int(attrs["K"]) * int(attrs["N"])
        elif n.op_type == "GatherBlockQuantized":  # genai's quantized embedding: bytes hold 8 // bits
            packed = next((t for t in graph.initializer if t.name == n.input[0]), None)
            if packed is not None and packed.data_type == onnx.TensorProto.UINT8:
                unpacked[n.input[0]] = math.prod(packed.dims) * 8 // int(attrs.get("bits", 4))
    n_params = n_bytes = 0
    for t in graph.initializer:
        n_bytes += _tensor_bytes(t)
        n = math.prod(t.dims)
        if t.name in unpacked:
            n_params += unpacked[t.name]
        elif t.name not in aux and n > 1 and t.data_type in _PARAM_TYPES:
            n_params += n
    return n_params, n_bytes, ops


def _infer_quant(graph: onnx.GraphProto, ops: dict[str, int]) -> str:
    for n in graph.node:
        if n.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            return f"int{attrs.get('bits', 4)}-b{attrs['block_size']}"
    if _INT8_OPS & ops.keys():
        return "int8"
    by_type: dict[int, int] = {}
    for t in graph.initializer:
        by_type[t.data_type] = by_type.get(t.data_type, 0) + _tensor_bytes(t)
    main = max(by_type, key=by_type.get) if by_type else onnx.TensorProto.FLOAT
    return {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16",
            onnx.TensorProto.INT8: "int8"}.get(main, "fp32")


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


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
        self._read_layout(path, graph)
        n_params, n_bytes, ops = _weights(graph)
        meta = {e.key: e.value for e in model.metadata_props}
        quant = meta.get("edgebench.quant") or _infer_quant(graph, ops)
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

    def _read_layout(self, path: Path, graph: onnx.GraphProto) -> None:
        inits = {t.name for t in graph.initializer}
        inputs = {vi.name: vi for vi in graph.input if vi.name not in inits}
        outputs = {vi.name: vi for vi in graph.output}
        past = {(int(m[1]), m[2]): n for n in inputs if (m := _PAST.match(n))}
        present = {(int(m[1]), m[2]): n for n in outputs if (m := _PRESENT.match(n))}
        missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
        missing += [] if "logits" in outputs else ["output logits"]
        n_layer = 1 + max((i for i, _ in past), default=-1)
        want = {(i, kv) for i in range(max(n_layer, 1)) for kv in ("key", "value")}
        missing += [f"past_key_values.{i}.{kv}" for i, kv in sorted(want - past.keys())]
        missing += [f"present.{i}.{kv}" for i, kv in sorted(want - present.keys())]
        if missing:
            raise InputError(f"{path} is not a decoder with KV-cache inputs: missing {', '.join(missing[:6])}"
                             + (" ..." if len(missing) > 6 else ""))
        unknown = sorted(set(inputs) - _FEEDABLE - set(past.values()))
        if unknown:
            raise InputError(f"{path} has inputs edgebench cannot feed: {', '.join(unknown)}")
        shape = _dims(inputs[past[0, "key"]])
        if len(shape) != 4 or not shape[1] or not shape[3]:
            raise InputError(f"{path}: cannot read n_head_kv / head_dim from past_key_values.0.key shape {shape}")
        self._n_layer, self._n_kv, self._head_dim = n_layer, shape[1], shape[3]
        self._kv_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
            inputs[past[0, "key"]].type.tensor_type.elem_type))
        self._past_names = [past[i, kv] for i in range(n_layer) for kv in ("key", "value")]
        self._out_names = ["logits"] + [present[i, kv] for i in range(n_layer) for kv in ("key", "value")]
        self._has_pos = "position_ids" in inputs
        self._has_branch = "use_cache_branch" in inputs
        logits = _dims(outputs["logits"])
        self._vocab = (logits[-1] or 0) if logits else 0
        self._logits_itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
            outputs["logits"].type.tensor_type.elem_type)).itemsize
        embed = [n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"]
        dims = {t.name: list(t.dims) for t in graph.initializer if embed and t.name == embed[0]}
        self._embd = dims[embed[0]][1] if embed and embed[0] in dims else 0
        heads = [a.i for n in graph.node if n.op_type in ("GroupQueryAttention", "MultiHeadAttention")
                 for a in n.attribute if a.name == "num_heads"]
        self._gqa_heads = heads[0] if heads else 0
        # GroupQueryAttention writes into its past buffer when present is the same buffer (how
        # onnxruntime-genai runs it): a cache preallocated for n_ctx, bound once, no per-step copy.
        gqa_out = {o for n in graph.node if n.op_type == "GroupQueryAttention" for o in n.output[1:3]}
        self._kv_shared = set(present.values()) <= gqa_out

    @staticmethod
    def _hf_config(path: Path) -> dict[str, Any]:
        cfg = path.parent / "config.json"
        try:
            return json.loads(cfg.read_text()) if cfg.is_file() else {}
        except (OSError, ValueError):
            return {}

    def _session(self, profile: bool) -> "ort.InferenceSession":
        so = ort.SessionOptions()
        so.intra_op_num_threads = self._case.n_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self._trace_dir, "ort")
        return ort.InferenceSession(str(self._path), so, providers=self._providers)

    def _use(self, sess: "ort.InferenceSession") -> None:
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
                          "(its event buffer is full): op times are partial")
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
