"""ONNX Runtime backend: decoder graphs with KV-cache inputs (Optimum / onnxruntime-genai layout).

The graph is read, not assumed (edgebench.models.onnx_file.read_layout): ``input_ids``, ``attention_mask``,
optional ``position_ids`` (and ``use_cache_branch`` of Optimum's merged decoders) and
``past_key_values.N.key|value`` in; ``logits`` and ``present.N.key|value`` out. The KV cache never
leaves the runtime: each run's present OrtValues are bound, through IO binding, as the next run's
past inputs.

onnx and onnxruntime are imported when a model is loaded: planning a run in the parent process
(backend_class(name).check_quant, .suffixes) loads no runtime.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgebench.backends.base import Backend, MemoryInfo, ModelInfo, OpEvent, OpTracer
from edgebench.backends.onnx_load import kv_bytes_per_token, model_info, read_hf_config, read_onnx
from edgebench.backends.ort_binding import make_binding
from edgebench.backends.ort_memory import COMPUTE_METHOD, bound_kv_bytes, memory_info, rss_bytes
from edgebench.backends.ort_trace import attribute_events
from edgebench.errors import InputError
from edgebench.models.quant_levels import ONNX_QUANTS
from edgebench.models.synth_onnx import LOGITS_TO_KEEP
from edgebench.records import Case, pad_ctx

for _runtime in ("onnx", "onnxruntime"):  # found, not imported: backend_class says "not available"
    if importlib.util.find_spec(_runtime) is None:
        raise ImportError(f"No module named {_runtime!r}")

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


_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeBackend(Backend, OpTracer):
    name = "onnxruntime"
    capabilities = frozenset({"ops", "kv_bytes", "logits"})
    suffixes = (".onnx", "")
    quants = ONNX_QUANTS
    reference_quant = "fp32"

    @classmethod
    def build_synthetic(cls, preset: str, quant: str, progress=None) -> str:
        from edgebench.models.synth_onnx import ensure_onnx_model

        return str(ensure_onnx_model(preset, quant, progress=progress))

    @classmethod
    def build_from_gguf(cls, source: str, quant: str, progress=None) -> str:
        """The GGUF ``source`` as an ONNX decoder at ``quant``, its own weights (models.gguf_to_onnx)."""
        from edgebench.models.gguf_to_onnx import ensure_onnx_from_gguf

        return str(ensure_onnx_from_gguf(source, quant, progress=progress))

    def __init__(self) -> None:
        self._sess = self._plain = None
        self._trace_dir: str | None = None
        self._n_vocab, self._meta = 0, {}
        self._all_sess = None

    # ---- loading -------------------------------------------------------------------------
    def load(self, case: Case) -> ModelInfo:
        import onnxruntime as ort

        from edgebench.models.onnx_file import read_layout

        path = resolve_model_file(case.model)
        f, g = read_onnx(path, lambda graph: read_layout(path, graph))
        # Flat attributes, not self._layout.x: _run reads several of them on every decode step.
        self._n_layer, self._n_kv, self._head_dim, self._kv_dtype = g.n_layer, g.n_kv, g.head_dim, g.kv_dtype
        self._past_names, self._out_names, self._kv_shared = g.past_names, g.out_names, g.kv_shared
        self._has_pos, self._has_branch, self._has_keep = g.has_pos, g.has_branch, g.has_keep
        self._vocab, self._logits_itemsize = g.vocab, g.logits_itemsize
        config = read_hf_config(path)
        if self._has_keep:  # referenced for as long as the sessions that use it
            self._keep_last = ort.OrtValue.ortvalue_from_numpy(np.ones(1, np.int64))

        self._ort = ort
        provider = _PROVIDERS.get(case.ep)
        available = ort.get_available_providers()
        if provider is None or provider not in available:
            raise InputError(f"execution provider {case.ep!r} is not available in this onnxruntime; "
                             f"available: {', '.join(available)}")
        self._providers = [provider] + (["CUDAExecutionProvider"] if case.ep == "tensorrt" else [])
        self._device = "cpu" if case.ep == "cpu" else "cuda"
        self._path, self._case = path, case
        self._meta = f.meta
        rss_before = rss_bytes()
        self._kv_bufs = self._new_kv_bufs(case.ctx_effective)
        self._use(self._session(profile=False))
        got = self._sess.get_providers()
        if got[0] != provider:
            raise RuntimeError(f"onnxruntime did not start {provider} (session runs on {', '.join(got)})")
        self._model_bytes = f.n_bytes
        self._grow_feeds(case.ctx_effective)
        self.reset()
        self._compute_est = self._probe_compute() if self._device == "cpu" else None
        info = model_info(
            f, name=config.get("_name_or_path") or path.stem, arch=config.get("model_type"), configs=[config],
            n_layer=g.n_layer, n_head_kv=g.n_kv, head_dim=g.head_dim, kv_dtype=g.kv_dtype, kv_shared=g.kv_shared,
            n_ctx_runtime=case.ctx_effective, ep=case.ep, providers=got,
            fallbacks={"n_head": g.gqa_heads, "n_embd": g.embd, "n_vocab": g.vocab},
            extra={"io_binding": self._bind.kind, "rss_load_bytes": rss_bytes() - rss_before,
                   "compute_bytes_method": COMPUTE_METHOD if self._compute_est is not None else "unknown"})
        self._n_vocab = info.n_vocab
        return info

    def _probe_compute(self) -> int:
        """RSS growth over one run of the largest chunk a case feeds, cache emptied after (see
        backends.ort_memory: an estimate of what the arena and intermediates take). In load: not timed."""
        before = rss_bytes()
        self._run([0] * max(1, min(self._case.n_batch, self._case.n_prompt, self._mask.shape[1])))
        self.reset()
        return max(rss_bytes() - before, 0)

    def _session(self, profile: bool, keep: bool = True):
        """A session on the model. ``keep``: a graph with a num_logits_to_keep input (the builder's,
        defaulting to 0 = all positions) computes the last position's logits only, as llama.cpp
        does: the value is set as an initializer, since IO binding cannot bind a graph input that
        has an initializer."""
        ort = self._ort
        so = ort.SessionOptions()
        if keep and self._has_keep:
            so.add_initializer(LOGITS_TO_KEEP, self._keep_last)
        so.intra_op_num_threads = self._case.n_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[self._case.graph_opt])
        so.log_severity_level = 3
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(self._trace_dir, "ort")
        return ort.InferenceSession(str(self._path), so, providers=self._providers)

    def _use(self, sess) -> None:
        """Run ``sess`` from now on, through a new binding (backends.ort_binding: the pybind fast
        path when its objects check out) with the shared-buffer cache bound as past and present."""
        self._sess, self._bind = sess, make_binding(self._ort, sess, self._device)
        self._bind.bind_new_output("logits")  # first: the run's outputs[0] is the logits
        for i, buf in enumerate(self._kv_bufs):
            v = self._bind.value(buf)
            self._bind.bind_value(self._past_names[i], v)
            self._bind.bind_value_output(self._out_names[i + 1], v)

    def _new_kv_bufs(self, n_ctx: int) -> list:
        """The shared-buffer cache: one [1, n_kv, n_ctx, head_dim] OrtValue per past input."""
        ort = self._ort  # zeros: never read unmasked, but finite
        return [ort.OrtValue.ortvalue_from_numpy(np.zeros((1, self._n_kv, n_ctx, self._head_dim), self._kv_dtype),
                                                 self._device, 0)
                for _ in self._past_names] if self._kv_shared else []

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
        self._empty = self._ort.OrtValue.ortvalue_from_numpy(
            np.zeros((1, self._n_kv, 0, self._head_dim), self._kv_dtype), self._device, 0)
        self._past = [self._bind.value(self._empty)] * len(self._past_names)

    def _run(self, tokens: Sequence[int]) -> None:
        n, start = len(tokens), self._n_past
        total = start + n
        if total > self._mask.shape[1]:
            if self._kv_shared:
                raise RuntimeError(f"the KV cache holds {self._mask.shape[1]} tokens (n_ctx); {total} asked")
            self._grow_feeds(2 * total)
        b = self._bind  # binds numpy memory without a copy: keep the arrays alive
        self._ids = np.asarray(tokens, np.int64).reshape(1, n)
        b.bind_array("input_ids", self._ids)
        b.bind_array("attention_mask", self._mask[:, :total])
        if self._has_pos:
            b.bind_array("position_ids", self._positions[:, start:total])
        if self._has_branch:
            b.bind_array("use_cache_branch", self._branch)
        if self._kv_shared:
            b.bind_new_output("logits")
        else:
            for name, value in zip(self._past_names, self._past):
                b.bind_value(name, value)
            for name in self._out_names:  # no shape: onnxruntime allocates the grown present
                b.bind_new_output(name)
        outs = b.run()
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
        """Logits [n_vocab] of the last token processed (a copy to host; not for timed code).
        Only the tests call it: they check the cache path against one-shot runs with it."""
        return self._logits.numpy()[0, -1].copy()

    # ---- capability "logits" (run/quality.py) ------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError("this ONNX model has no tokenizer: score a generated stream (no --text)")

    def bos_token(self) -> int | None:
        """edgebench.bos_token_id metadata, else None (synthetic presets add no BOS)."""
        v = self._meta.get("edgebench.bos_token_id", "")
        return int(v) if v.lstrip("-").isdigit() and int(v) >= 0 else None

    def fit_context(self, n_tokens: int) -> None:
        """Grow the shared-buffer cache (and the mask / position rows) to pad_ctx(n_tokens); the
        cache is then empty. A concat cache grows by itself."""
        if n_tokens <= self._mask.shape[1]:
            return
        n_ctx = pad_ctx(n_tokens)
        if self._kv_shared:
            self._kv_bufs = self._new_kv_bufs(n_ctx)
            self._use(self._sess)  # rebind the new buffers as past inputs and present outputs
        self._grow_feeds(n_ctx)
        self.reset()

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """``tokens`` as a fresh sequence, in n_batch-sized runs; every position's logits (a graph
        with num_logits_to_keep is fed 0 for these runs) copied to host as float32. The cache
        holds ``tokens`` after."""
        n, step = len(tokens), self._case.n_batch
        self.fit_context(n)
        self.reset()
        out = np.empty((n, self._n_vocab), np.float32)
        timed = self._sess
        if self._has_keep:
            self._use(self._all_logits_session())
        try:
            for i in range(0, n, step):
                self._run(tokens[i:i + step])
                out[i:i + step] = self._logits.numpy()[0]
        finally:
            if self._has_keep:
                self._use(timed)  # the cache buffers are shared: the cache stays as it is
        return out

    def _all_logits_session(self):
        """A second session on the file's own num_logits_to_keep (0: every position), made on the
        first logits() call, after everything timed: it holds a second copy of the weights."""
        if self._all_sess is None:
            self._all_sess = self._session(profile=False, keep=False)
        return self._all_sess

    def step_logits(self, token: int) -> np.ndarray:
        self._run((token,))
        return self._logits.numpy()[0, -1].astype(np.float32)

    # ---- memory / versions ---------------------------------------------------------------
    def _buffer(self) -> str:
        return "CPU" if self._device == "cpu" else "CUDA0"

    def memory(self) -> MemoryInfo:
        """Initializer bytes of the file; the bound KV buffers' bytes (exact; a concat cache: its
        bytes at ctx_effective tokens); the load-time compute estimate (backends.ort_memory); the
        logits tensor of one run."""
        per_token = kv_bytes_per_token(self._n_layer, self._n_kv, self._head_dim, self._kv_dtype)
        chunk = 1 if self._has_keep else min(self._case.n_batch, self._case.n_prompt)
        kv = (bound_kv_bytes(self._kv_bufs, self._kv_dtype) if self._kv_shared
              else per_token * self._case.ctx_effective)
        return memory_info(self._buffer(), model_bytes=self._model_bytes, kv_bytes=kv,
                           compute_estimate=self._compute_est,
                           logits_bytes=chunk * self._vocab * self._logits_itemsize if self._vocab else 0)

    def kv_used_bytes(self) -> int | None:
        """Bytes of K/V of the tokens in the cache (concat mode: of the present tensors held)."""
        if self._kv_shared:
            return kv_bytes_per_token(self._n_layer, self._n_kv, self._head_dim, self._kv_dtype) * self._n_past
        return sum(math.prod(v.shape()) for v in self._past) * self._kv_dtype.itemsize

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime as ort

        out = {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
               "providers_available": ",".join(ort.get_available_providers()), "device": ort.get_device()}
        if hasattr(ort, "get_build_info"):
            out["build_info"] = ort.get_build_info()
        return out

    def close(self) -> None:
        if self._trace_dir:
            shutil.rmtree(self._trace_dir, ignore_errors=True)
            self._trace_dir = None
        self._sess = self._plain = self._bind = self._all_sess = None
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
        return attribute_events(events, start_ns, self._marks, self._traced_runs)
