"""llama.cpp through llama-cpp-python's low-level ctypes API (not the high-level Llama class).

Measurement follows llama-bench: random token ids, llama_batch_get_one, one llama_decode per
n_batch chunk, llama_synchronize before returning. The runtime's memory figures come from
llama.cpp's own log lines (no public API reports buffer sizes), parsed by parse_buffer_sizes();
the weights are counted once, as llama_model_size counts them (llama_memory.split_weights).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from edgebench.backends.base import Backend, MemoryInfo, ModelInfo, OpEvent, OpTracer
from edgebench.backends.llama_memory import parse_buffer_sizes, split_weights
from edgebench.errors import InputError
from edgebench.models.quant_levels import GGUF_QUANTS, QuantLevels
from edgebench.records import Case, pad_ctx

UNQUANTIZED_CACHE_TYPES = ("f32", "f16", "bf16")
_FLASH_ATTN = {"auto": "LLAMA_FLASH_ATTN_TYPE_AUTO", "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED", "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED"}

class _LogCapture:
    """Routes llama.cpp's log into a list (the CLI stays readable; memory figures are parsed from it)."""

    def __init__(self, llama_cpp):
        self.lines: list[str] = []
        self._partial = ""

        def cb(level, text, user_data):  # noqa: ARG001
            self._partial += text.decode("utf-8", "replace") if text else ""
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self.lines.append(line)

        # Keep the ctypes callback referenced for as long as llama.cpp may call it.
        self._cb = llama_cpp.llama_log_callback(cb)
        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))

    def since(self, start: int) -> list[str]:
        return self.lines[start:]


class LlamaCppBackend(Backend, OpTracer):
    name: ClassVar[str] = "llama-cpp"
    capabilities: ClassVar[frozenset[str]] = frozenset({"kv_bytes", "gpu_offload", "ops", "logits"})
    suffixes: ClassVar[tuple[str, ...]] = (".gguf",)
    quants: ClassVar[QuantLevels] = GGUF_QUANTS
    reference_quant: ClassVar[str] = "F16"

    def __init__(self) -> None:
        import llama_cpp

        self._ll = llama_cpp
        llama_cpp.llama_backend_init()
        self._log = _LogCapture(llama_cpp)
        self.model = None
        self.ctx = None
        self.case: Case | None = None
        self._mem: dict[str, dict[str, int]] = {}  # parse_buffer_sizes, weights split, + "repack"
        self._one = (llama_cpp.llama_token * 1)()
        self._n_vocab = 0
        self._tracer = None  # ggml_ctypes.NodeTracer while ops tracing is on (owns the callback)
        self._probe = None  # ggml_ctypes.LaunchProbe, idem
        self._traced_phase = ""

    @classmethod
    def refusal(cls, case: Case) -> str | None:
        # llama-context.cpp (llama_init_from_model): "quantized V cache requires flash_attn to be enabled"
        if case.flash_attn == "off" and case.cache_type_v.lower() not in UNQUANTIZED_CACHE_TYPES:
            return (f"llama.cpp refuses a quantized V cache (-ctv {case.cache_type_v}) without flash attention "
                    f"(-fa off): not started (use -fa on or auto)")
        return None

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self, case: Case) -> ModelInfo:
        from edgebench.models.gguf_file import read_gguf_info

        ll = self._ll
        self.case = case
        gi = read_gguf_info(case.model)
        start = len(self._log.lines)
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = case.n_gpu_layers
        self.model = ll.llama_model_load_from_file(str(case.model).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {case.model}: {self._last_error(start)}")
        self.ctx = self._new_context(case)
        size = ll.llama_model_size(self.model)
        self._mem = parse_buffer_sizes(self._log.since(start))
        self._mem["weights"], self._mem["repack"] = split_weights(self._mem["weights"], size)
        vocab = ll.llama_model_get_vocab(self.model)
        self._n_vocab = ll.llama_vocab_n_tokens(vocab)
        n_params = ll.llama_model_n_params(self.model)
        n_head = ll.llama_model_n_head(self.model)
        return ModelInfo(
            name=gi.synthetic_preset or gi.name or Path(case.model).stem,
            arch=gi.arch, quant=gi.quant, bpw=size * 8 / n_params if n_params else 0.0,
            n_params=n_params, model_bytes=size,
            n_layer=ll.llama_model_n_layer(self.model), n_embd=ll.llama_model_n_embd(self.model),
            n_head=n_head, n_head_kv=ll.llama_model_n_head_kv(self.model), head_dim=gi.head_dim,
            n_ff=gi.n_ff, n_vocab=self._n_vocab, tied=gi.tied, n_ctx_train=ll.llama_model_n_ctx_train(self.model),
            n_ctx_runtime=ll.llama_n_ctx(self.ctx),
            # tied and n_ff are stored from extra (ModelInfo.to_dict keeps the shape's other fields)
            extra={"embed_params": gi.embed_params, "file_bytes": gi.file_bytes, "tied": gi.tied,
                   "tensor_types": gi.tensor_types, "n_ff": gi.n_ff, "synthetic_preset": gi.synthetic_preset or None,
                   **gi.provenance},
        )

    def _new_context(self, case: Case, cb_eval=None, n_ctx: int = 0):
        """Create a context for ``case`` (``n_ctx``: a larger one, for the quality pass). ``cb_eval``
        (a ctypes ggml_backend_sched_eval_callback, kept referenced by the caller) makes the
        scheduler call back per graph node (ops profiler)."""
        ll = self._ll
        cp = ll.llama_context_default_params()
        cp.n_ctx = max(n_ctx, case.ctx_effective)
        cp.n_batch = case.n_batch
        cp.n_ubatch = case.n_ubatch
        cp.n_seq_max = 1
        cp.n_threads = case.n_threads
        cp.n_threads_batch = case.n_threads
        cp.flash_attn_type = getattr(ll, _FLASH_ATTN[case.flash_attn])
        cp.type_k = _ggml_type(ll, case.cache_type_k)
        cp.type_v = _ggml_type(ll, case.cache_type_v)
        cp.no_perf = False  # llama.cpp's own counters, read only by benchmarks/fidelity.py
        if cb_eval is not None:
            cp.cb_eval = cb_eval
            cp.cb_eval_user_data = None
        start = len(self._log.lines)
        ctx = ll.llama_init_from_model(self.model, cp)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context (n_ctx={cp.n_ctx}): {self._last_error(start)}")
        return ctx

    def _last_error(self, start: int) -> str:
        lines = [l.strip() for l in self._log.since(start) if l.strip()]
        errs = [l for l in lines if "error" in l.lower() or "failed" in l.lower()]
        return (errs or lines or ["no message"])[-1]

    def close(self) -> None:
        if self.ctx:
            self._ll.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self._ll.llama_model_free(self.model)
            self.model = None

    # -- measured calls ----------------------------------------------------------------------
    def reset(self) -> None:
        self._ll.llama_memory_clear(self._ll.llama_get_memory(self.ctx), True)

    def prefill(self, tokens: Sequence[int]) -> None:
        ll, ctx = self._ll, self.ctx
        n_batch = self.case.n_batch
        arr = (ll.llama_token * len(tokens))(*tokens)
        for i in range(0, len(tokens), n_batch):
            n = min(n_batch, len(tokens) - i)
            chunk = ctypes.cast(ctypes.byref(arr, i * ctypes.sizeof(ll.llama_token)), ctypes.POINTER(ll.llama_token))
            rc = ll.llama_decode(ctx, ll.llama_batch_get_one(chunk, n))
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with {rc} (prefill chunk at token {i})")
        ll.llama_synchronize(ctx)

    def decode_step(self, token: int) -> None:
        ll = self._ll
        self._one[0] = token
        rc = ll.llama_decode(self.ctx, ll.llama_batch_get_one(self._one, 1))
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with {rc} (decode step)")
        ll.llama_synchronize(self.ctx)

    # -- logits (capability "logits"; the quality pass only, never in the timing reps) ---------
    def tokenize(self, text: str) -> list[int]:
        """llama_tokenize with add_special (BOS where llama_vocab_get_add_bos says so) and no
        parsing of special-token text, as llama-perplexity tokenizes its input."""
        ll = self._ll
        vocab = ll.llama_model_get_vocab(self.model)
        data = text.encode("utf-8")
        cap = len(data) + 8
        arr = (ll.llama_token * cap)()
        n = ll.llama_tokenize(vocab, data, len(data), arr, cap, True, False)
        if n < 0:  # more tokens than room: -n is how many
            cap = -n
            arr = (ll.llama_token * cap)()
            n = ll.llama_tokenize(vocab, data, len(data), arr, cap, True, False)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed with {n}")
        return list(arr[:n])

    def bos_token(self) -> int | None:
        ll = self._ll
        vocab = ll.llama_model_get_vocab(self.model)
        bos = ll.llama_vocab_bos(vocab)
        return int(bos) if ll.llama_vocab_get_add_bos(vocab) and bos >= 0 else None

    def fit_context(self, n_tokens: int) -> None:
        if self._ll.llama_n_ctx(self.ctx) < n_tokens:
            self._ll.llama_free(self.ctx)
            self.ctx = None
            self.ctx = self._new_context(self.case, n_ctx=pad_ctx(n_tokens))

    def logits(self, tokens: Sequence[int]):
        """One sequence from position 0, logits requested for every token, in n_batch-sized
        llama_decode calls; each row copied out with llama_get_logits_ith."""
        import numpy as np

        ll = self._ll
        n = len(tokens)
        self.fit_context(n)
        self.reset()
        n_batch = min(self.case.n_batch, ll.llama_n_batch(self.ctx), n)
        batch = _Batch(ll, n_batch)  # its ctypes arrays live until this call returns
        out = np.empty((n, self._n_vocab), np.float32)
        for i in range(0, n, n_batch):
            m = batch.fill(tokens[i:i + n_batch], i)
            rc = ll.llama_decode(self.ctx, batch.batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with {rc} (logits at token {i})")
            for j in range(m):
                out[i + j] = np.ctypeslib.as_array(ll.llama_get_logits_ith(self.ctx, j), shape=(self._n_vocab,))
        ll.llama_synchronize(self.ctx)
        return out

    def step_logits(self, token: int):
        import numpy as np

        self.decode_step(token)  # llama_batch_get_one: the last token's logits are output
        return np.ctypeslib.as_array(self._ll.llama_get_logits_ith(self.ctx, -1), shape=(self._n_vocab,)).copy()

    # -- op tracing (OpTracer; used by the ops profiler only, never in the plain timing reps) --
    def ops_begin(self) -> None:
        """Rebuild the context with the scheduler's eval callback (ggml_ctypes.NodeTracer; the KV
        cache is then empty) and warm it up untraced. Blocks."""
        from edgebench.backends.ggml_ctypes import GgmlLib, LaunchProbe, NodeTracer

        tracer = NodeTracer(GgmlLib(), self._ll.ggml_backend_sched_eval_callback)
        probe = LaunchProbe(tracer, self.case.n_threads)
        try:
            self._swap_context(tracer.callback)
        except BaseException:
            probe.close()
            raise
        # The tracer keeps the CFUNCTYPE object alive as long as the context may call it.
        self._tracer, self._probe, self._traced_phase = tracer, probe, ""
        # First computes on a fresh context touch its compute buffers: keep that out of the trace.
        n = min(self.case.n_prompt, self.case.n_ubatch)
        self.prefill([i % max(self._n_vocab, 1) for i in range(n)])
        self.decode_step(n % max(self._n_vocab, 1))
        self.reset()

    def ops_mark(self, phase: str, rep: int) -> None:
        """Following nodes belong to (phase, rep); ``phase=""`` stops recording (untimed work).
        Closing a phase runs the no-op launch probe (events "launch/<phase>", same rep)."""
        self._tracer.mark(phase, rep)
        if not phase and self._traced_phase:
            self._probe.run(self._traced_phase, rep)
        self._traced_phase = phase

    def ops_end(self) -> list[OpEvent]:
        """Restore a plain context (no callback; the KV cache is then empty); return the events."""
        tracer, probe, self._tracer, self._probe = self._tracer, self._probe, None, None
        if probe:
            probe.close()
        self._swap_context(None)
        return tracer.events() if tracer else []  # the callback is released after its context

    def _swap_context(self, cb_eval) -> None:
        if self.ctx:
            self._ll.llama_free(self.ctx)
            self.ctx = None
        self.ctx = self._new_context(self.case, cb_eval)

    # -- facts -------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def n_cached(self) -> int:
        return self._ll.llama_memory_seq_pos_max(self._ll.llama_get_memory(self.ctx), 0) + 1

    def memory(self) -> MemoryInfo:
        m = self._mem
        return MemoryInfo(m["weights"], m["kv"], m["compute"], m["output"], repack_by_buffer=m["repack"])

    def kv_used_bytes(self) -> int | None:
        kv = sum(self._mem["kv"].values())
        n_ctx = self._ll.llama_n_ctx(self.ctx)
        return kv * self.n_cached() // n_ctx if n_ctx else None

    def log_lines(self) -> list[str]:
        return list(self._log.lines)

    def perf_context(self) -> dict[str, float]:
        """llama.cpp's internal counters (benchmarks/fidelity.py compares them with ours)."""
        d = self._ll.llama_perf_context(self.ctx)
        return {f: getattr(d, f) for f, _ in d._fields_}

    def perf_reset(self) -> None:
        self._ll.llama_perf_context_reset(self.ctx)

    def versions(self) -> dict[str, str]:
        ll = self._ll
        return {
            "llama_cpp_python": ll.__version__,
            "llama_cpp_system_info": ll.llama_print_system_info().decode(errors="replace").strip(),
            "gpu_offload": str(bool(ll.llama_supports_gpu_offload())),
            "mmap": str(bool(ll.llama_supports_mmap())),
        }

    @classmethod
    def build_synthetic(cls, preset: str, quant: str, progress=None) -> str:
        from edgebench.models import synth_gguf

        return str(synth_gguf.ensure_model(preset, quant, progress=progress))


class _Batch:
    """A llama_batch over ctypes arrays this object owns (one sequence, every logit requested):
    keep it referenced for as long as llama_decode reads it."""

    def __init__(self, ll: Any, cap: int):
        self.token = (ll.llama_token * cap)()
        self.pos = (ll.llama_pos * cap)()
        self.n_seq_id = (ctypes.c_int32 * cap)(*([1] * cap))
        self.seq0 = (ll.llama_seq_id * 1)(0)
        seq_ptr = ctypes.cast(self.seq0, ctypes.POINTER(ll.llama_seq_id))
        self.seq_id = (ctypes.POINTER(ll.llama_seq_id) * cap)(*([seq_ptr] * cap))
        self.want = (ctypes.c_int8 * cap)(*([1] * cap))
        b = ll.llama_batch()
        b.token = ctypes.cast(self.token, ctypes.POINTER(ll.llama_token))
        b.embd = None
        b.pos = ctypes.cast(self.pos, ctypes.POINTER(ll.llama_pos))
        b.n_seq_id = ctypes.cast(self.n_seq_id, ctypes.POINTER(ctypes.c_int32))
        b.seq_id = ctypes.cast(self.seq_id, ctypes.POINTER(ctypes.POINTER(ll.llama_seq_id)))
        b.logits = ctypes.cast(self.want, ctypes.POINTER(ctypes.c_int8))
        self.batch = b

    def fill(self, tokens: Sequence[int], pos0: int) -> int:
        for j, t in enumerate(tokens):
            self.token[j] = int(t)
            self.pos[j] = pos0 + j
        self.batch.n_tokens = len(tokens)
        return len(tokens)


def _ggml_type(ll: Any, name: str) -> int:
    t = getattr(ll, f"GGML_TYPE_{name.upper()}", None)
    if t is None:
        raise InputError(f"cache type {name} is not known to this llama.cpp build")
    return t
