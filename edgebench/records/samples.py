"""Raw samples, the metrics they may carry, and the op taxonomy every runtime maps onto."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ENERGY_TOTAL = "total"  # label of whole-device power / energy samples (per-rail ones are source:rail)

# Op classes (DESIGN.md): one taxonomy for every runtime; backends map their node types onto it.
OP_CLASSES: tuple[str, ...] = (
    "mul_mat_vec", "mul_mat", "attention", "norm", "rope", "activation", "elementwise", "copy", "other",
)

# ggml ops its CPU backend computes on one thread whatever the thread count (ggml-cpu.c,
# ggml_get_n_tasks in the llama.cpp that llama-cpp-python 0.3.36 vendors: n_tasks = 1). Traced one
# node at a time, such a node pays no thread fork/join: the ops correction uses the one-thread launch
# cost for them (analysis/ops.py). Unary ops other than GELU/SILU and SOFT_MAX of one row are
# one-task too but not listed: their node names do not say which they are.
GGML_ONE_TASK_OPS = frozenset((
    "NONE", "RESHAPE", "VIEW", "PERMUTE", "TRANSPOSE", "GET_ROWS", "SET_ROWS", "SCALE", "SET", "GET_ROWS_BACK",
    "DIAG", "CLAMP", "SUB", "SQR", "SQRT", "LOG", "SIN", "COS", "SUM", "SUM_ROWS", "MEAN", "ARGMAX", "REPEAT",
    "REPEAT_BACK", "LEAKY_RELU", "POOL_1D", "POOL_2D", "POOL_2D_BACK", "WIN_PART", "WIN_UNPART", "GET_REL_POS",
))


@dataclass(frozen=True)
class Sample:
    """One raw measurement. ``idx`` orders repeated values within (rep, phase, metric), e.g. decode
    steps or timeline points; ``label`` qualifies it (an op name, a buffer type, a sensor);
    ``t_ns`` is the time since the case's worker started, for timelines (None otherwise)."""

    rep: int
    phase: str
    metric: str
    value: float
    idx: int = 0
    label: str = ""
    t_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    doc: str


# Every metric a sample may carry. Backends / profilers add theirs here, never elsewhere.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("load_ns", "ns", "model load + context creation, wall clock"),
        Metric("prefill_ns", "ns", "one llama_decode-equivalent over n_prompt tokens at depth, synchronized"),
        Metric("decode_step_ns", "ns", "one single-token decode step, synchronized; idx = step"),
        Metric("decode_ns", "ns", "a rep's n_gen decode steps timed as one (imported llama-bench tg tests, "
               "which keep no per-step time)"),
        Metric("weights_bytes", "bytes", "model weights, each tensor counted once (llama.cpp: totals "
               "llama_model_size); label = buffer type it is read from"),
        Metric("repack_bytes", "bytes", "weights held a second time in a repacked layout (llama.cpp CPU_REPACK "
               "beside the mapped file), not in weights_bytes; label = buffer type"),
        Metric("kv_bytes", "bytes", "KV cache allocated for n_ctx; label = buffer type"),
        Metric("kv_used_bytes", "bytes", "KV cache bytes for the tokens in the cache after the phase"),
        Metric("compute_bytes", "bytes", "scheduler compute buffers; label = buffer type"),
        Metric("output_bytes", "bytes", "logits/embeddings output buffer; label = buffer type"),
        Metric("rss_bytes", "bytes", "worker resident set size timeline; t_ns set"),
        Metric("rss_peak_bytes", "bytes", "worker peak RSS in the phase (sampler + OS high-water mark)"),
        Metric("gpu_mem_bytes", "bytes", "GPU memory used timeline (NVML)"),
        Metric("gpu_peak_bytes", "bytes", "GPU memory peak in the phase (NVML)"),
        Metric("op_ns", "ns", "time attributed to one op (label = OP or OP|class); idx = rep-local count"),
        Metric("op_typical_ns", "ns", "op time without rare stalls: sum over its nodes of the median time of "
               "that node name in the phase over all profiled reps (label as op_ns; ops profiler)"),
        Metric("op_count", "1", "number of nodes of an op (label as op_ns)"),
        Metric("node_ns", "ns", "time of a named graph node (label = node name)"),
        Metric("profiled_ns", "ns", "wall time of a profiled phase (ops profiler)"),
        Metric("op_launch_ns", "ns", "cost of observing one node that does nothing (ops profiler)"),
        Metric("op_launch1_ns", "ns", "the same for a node ggml computes on one thread (GGML_ONE_TASK_OPS)"),
        Metric("power_w", "W", "power timeline; label = source/rail"),
        Metric("energy_j", "J", "energy over the phase window; label = source/rail"),
        Metric("temp_c", "C", "temperature timeline; label = sensor"),
        Metric("cpu_pct", "%", "CPU utilisation timeline"),
        Metric("cpu_freq_mhz", "MHz", "CPU frequency timeline; label = core or 'avg'"),
        Metric("gpu_freq_mhz", "MHz", "GPU clock timeline"),
        Metric("gpu_util_pct", "%", "GPU utilisation timeline"),
        Metric("throttle", "1", "1 when a throttle reason / clock drop was seen; label = reason"),
        Metric("energy_window_ns", "ns", "length of the phase window energy_j covers (telemetry)"),
        Metric("emc_util_pct", "%", "memory controller (EMC) load timeline (tegrastats)"),
        Metric("emc_freq_mhz", "MHz", "memory controller (EMC) clock timeline (tegrastats)"),
        # Quality pass (phase "quality", rep 0, idx = scored token index; edgebench.analysis.quality)
        Metric("kld", "nats", "KL(reference || level) of one scored token's next-token distribution"),
        Metric("delta_p", "1", "p_level(actual next token) - p_reference(actual next token)"),
        Metric("same_top", "1", "1 when the level's most likely next token is the reference's, else 0"),
        Metric("nll", "nats", "-log p_level(actual next token)"),
        Metric("nll_ref", "nats", "-log p_reference(actual next token)"),
    )
}


@dataclass(frozen=True)
class OpEvent:
    """Time of one executed node, as an op tracer saw it."""

    phase: str  # "prefill" | "decode"
    rep: int
    op: str  # runtime op name: MUL_MAT, FLASH_ATTN_EXT, MatMulNBits ...
    op_class: str  # one of OP_CLASSES
    name: str  # node name: ffn_down-12, result_output, /model/layers.0/attn/...
    ns: int
