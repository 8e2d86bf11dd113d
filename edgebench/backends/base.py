"""The Backend interface: what a runtime adapter must offer the worker.

A backend runs in the worker subprocess only. Every call that computes blocks until the device
is done (the worker times around it with perf_counter_ns), so a backend must synchronize before
returning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from edgebench.models.quant_levels import QuantLevels
from edgebench.models.shape import ModelShape
from edgebench.records import Case

if TYPE_CHECKING:
    import numpy as np

# The keys of the stored case info (run.json, the store), in order: model_name is the shape's name;
# n_ff and tied are not among them (llama.cpp's backend keeps them in extra, as it always stored them).
_STORED_KEYS = ("model_name", "arch", "quant", "bpw", "n_params", "model_bytes", "n_layer", "n_embd", "n_head",
                "n_head_kv", "head_dim", "n_vocab", "n_ctx_train", "n_ctx_runtime", "extra")


@dataclass(frozen=True)
class ModelInfo(ModelShape):
    """Facts about the loaded model, read from the file and the runtime (never the file name):
    its shape (name: the model's name) and what the runtime made of it."""

    quant: str  # e.g. "Q4_K_M", "F16", "fp32", "int4-b32"
    bpw: float  # bits per weight: file tensor bytes * 8 / n_params
    n_params: int
    model_bytes: int  # bytes of the weights in the file
    n_ctx_runtime: int  # context the runtime really allocated (llama.cpp pads to 256)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, Any]:
        """The stored case info: _STORED_KEYS, extra as a dict of its own."""
        d = asdict(self)
        d["model_name"] = d["name"]
        return {k: d[k] for k in _STORED_KEYS}


@dataclass(frozen=True)
class MemoryInfo:
    """Bytes as the runtime sees them. ``*_by_buffer`` split each figure per buffer type
    (e.g. {"CPU": ..., "CUDA0": ...}); the totals are their sums. Weights count each tensor once
    (where it is read from: llama.cpp's total is llama_model_size); ``repack_by_buffer`` is memory
    on top of them: tensors held a second time in a runtime-specific layout (llama.cpp's
    CPU_REPACK while the mapped file keeps the originals), never part of weights_bytes."""

    weights_by_buffer: dict[str, int]
    kv_by_buffer: dict[str, int]
    compute_by_buffer: dict[str, int]
    output_by_buffer: dict[str, int] = field(default_factory=dict)
    repack_by_buffer: dict[str, int] = field(default_factory=dict)

    @property
    def weights_bytes(self) -> int:
        return sum(self.weights_by_buffer.values())

    @property
    def kv_bytes(self) -> int:
        return sum(self.kv_by_buffer.values())

    @property
    def compute_bytes(self) -> int:
        return sum(self.compute_by_buffer.values())

    @property
    def repack_bytes(self) -> int:
        return sum(self.repack_by_buffer.values())


class Backend(ABC):
    """One runtime. Lifecycle: load() once, then any number of reset/prefill/decode_step, close()."""

    name: ClassVar[str]
    # What the backend can do, e.g. {"ops", "kv_bytes", "gpu_offload"}. Profilers check these.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # Model file suffixes this backend takes ("" for folders).
    suffixes: ClassVar[tuple[str, ...]] = ()
    # The quant levels this backend can build synthetic presets at (models.quant_levels; None: it
    # builds none). quant_levels and default_ladder are copied from it for each subclass.
    quants: ClassVar[QuantLevels | None] = None
    quant_levels: ClassVar[tuple[str, ...]] = ()
    default_ladder: ClassVar[tuple[str, ...]] = ()
    # The level quality is scored against by default (--quality-ref; "" for none): F16, fp32.
    reference_quant: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.quants is not None:
            cls.quant_levels, cls.default_ladder = cls.quants.levels, cls.quants.ladder

    @classmethod
    def check_quant(cls, quant: str) -> str | None:
        """The canonical spelling of ``quant`` if this backend can build it, else None."""
        return cls.quants.canonical(quant) if cls.quants else None

    @classmethod
    def refusal(cls, case: Case) -> str | None:
        """Why the runtime would refuse ``case``'s settings outright, known without loading anything
        (the runner then stores the case as skipped and starts no worker); None when it may run."""
        return None

    @classmethod
    def build_synthetic(cls, preset: str, quant: str, progress=None) -> str:
        """Build (or reuse from the cache) a synthetic model file; returns its path. Blocks."""
        raise NotImplementedError(f"{cls.name} cannot build synthetic models")

    @abstractmethod
    def load(self, case: Case) -> ModelInfo:
        """Load the model and create the execution context for ``case``. Blocks."""

    @abstractmethod
    def reset(self) -> None:
        """Empty the KV cache; the next token is at position 0."""

    @abstractmethod
    def prefill(self, tokens: Sequence[int]) -> None:
        """Process ``tokens`` after what the cache holds, in n_batch chunks. Blocks until done."""

    @abstractmethod
    def decode_step(self, token: int) -> None:
        """Process one token after what the cache holds. Blocks until done."""

    @abstractmethod
    def memory(self) -> MemoryInfo:
        """Weights / KV / compute bytes as the runtime allocated them."""

    def kv_used_bytes(self) -> int | None:
        """Bytes of KV cache holding the tokens now in the cache (None if unknown)."""
        return None

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """Runtime versions and build facts, for run.json."""

    # -- capability "logits" (the quality pass, run/quality.py) -------------------------------
    def tokenize(self, text: str) -> list[int]:
        """``text`` in the model's own tokens, special tokens added as the model adds them (BOS)."""
        raise NotImplementedError(f"{self.name} has no tokenizer (capability 'logits')")

    def bos_token(self) -> int | None:
        """The token the model puts first (BOS), or None when it adds none."""
        return None

    def fit_context(self, n_tokens: int) -> None:
        """Make sure one sequence of ``n_tokens`` fits the context (it may be rebuilt: the cache is
        then empty). Blocks."""

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """float32 (len(tokens), n_vocab): the next-token logits at every position of ``tokens``
        evaluated as a fresh sequence (the cache is cleared first). Blocks."""
        raise NotImplementedError(f"{self.name} cannot compute logits (capability 'logits')")

    def step_logits(self, token: int) -> np.ndarray:
        """float32 (n_vocab,): process one token after what the cache holds, return its logits."""
        raise NotImplementedError(f"{self.name} cannot compute logits (capability 'logits')")

    def log_lines(self) -> list[str]:
        """The runtime's own log, if the backend captured it (written to the case log)."""
        return []

    def close(self) -> None:
        """Free the runtime's resources. Safe to call twice."""


class OpTracer(ABC):
    """Mixin for backends with the "ops" capability: per-node timing for the ops profiler.

    ops_begin() switches tracing on (a backend may rebuild its execution context for it: the
    KV cache is then empty); ops_mark() tells which phase/rep the following nodes belong to;
    ops_end() switches tracing off, restores the untraced context and returns the events.
    """

    @abstractmethod
    def ops_begin(self) -> None: ...

    @abstractmethod
    def ops_mark(self, phase: str, rep: int) -> None: ...

    @abstractmethod
    def ops_end(self) -> list[OpEvent]: ...


from edgebench.records import OpEvent  # noqa: E402  (re-exported for backends)
