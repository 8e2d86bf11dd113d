"""THE schema of edgebench results: one place for every stored field, its type and its unit.

The store's DDL, the CSV headers and the report columns all derive from the definitions here.

Stored data is long and flat. A *sample* is one raw measurement:
(run_id, case_id, rep, phase, metric, idx, label, value, t_ns), in raw SI units (ns, bytes,
joules, watts, degrees C). Per-case summaries (tok/s, percentiles...) are computed on read by
``edgebench.analysis``; nothing derived is stored.

SCHEMA_VERSION history:
  1 - first stored format (runs, cases, samples).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

FLASH_ATTN_VALUES = ("auto", "on", "off")
GRAPH_OPT_VALUES = ("disable", "basic", "extended", "all")  # onnxruntime graph optimization levels
ENERGY_TOTAL = "total"  # label of whole-device power / energy samples (per-rail ones are source:rail)

# Op classes (DESIGN.md): one taxonomy for every runtime; backends map their node types onto it.
OP_CLASSES: tuple[str, ...] = (
    "mul_mat_vec", "mul_mat", "attention", "norm", "rope", "activation", "elementwise", "copy", "other",
)

CACHE_TYPES = ("f16", "bf16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")


def pad_ctx(n_tokens: int) -> int:
    """The context size llama.cpp allocates for ``n_tokens``: padded up to a multiple of 256
    (llama-context.cpp: ``cparams.n_ctx = GGML_PAD(cparams.n_ctx, 256)``)."""
    return -(-n_tokens // 256) * 256


@dataclass(frozen=True)
class Case:
    """One measured configuration: a model file on one backend with one set of parameters.

    Field names follow llama-bench where it has one. ``n_ctx == 0`` means "derive it":
    depth + n_prompt + n_gen, padded as llama.cpp pads it.
    """

    backend: str
    model: str  # path of the model file (GGUF / ONNX / folder) as given or as built
    n_prompt: int = 512
    n_gen: int = 128
    depth: int = 0
    n_ctx: int = 0
    n_batch: int = 2048
    n_ubatch: int = 512
    n_threads: int = 1
    n_gpu_layers: int = 99
    flash_attn: str = "auto"
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    ep: str = "cpu"  # execution provider (onnxruntime); llama.cpp ignores it
    graph_opt: str = "all"  # onnxruntime graph optimization level; llama.cpp ignores it
    reps: int = 5
    warmup: bool = True
    profile: tuple[str, ...] = ()  # intrusive/extra profilers: "ops", "telemetry", ...
    preset: str = ""  # synthetic preset the model was built from ("" for a real model)
    quant_request: str = ""  # quant level asked for (presets, sources); the stored quant is read from the file
    source: str = ""  # a user's GGUF this case's model is requantized from at quant_request ("" otherwise)
    # Quality (run/quality.py): next-token distributions against a reference on the same tokens.
    speed: bool = True  # False: the quality pass only (`edgebench quality`, an added reference case)
    quality: bool = False
    quality_ctx: int = 512  # tokens per chunk (llama-perplexity's n_ctx); the second half is scored
    quality_chunks: int = 0  # 0: as many as the text gives (a generated stream: QUALITY_STREAM_CHUNKS)
    quality_text: str = ""  # path of the text; "" = a stream the reference generates from quality_seed
    quality_ref: str = ""  # reference model path, "quant:LEVEL" (this model built at LEVEL), "" = this case
    quality_seed: int = 0
    quality_top_k: int = 0  # reference log-probs kept per token; 0 = analysis.quality.DEFAULT_TOP_K
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        for name in ("reps", "n_batch", "n_ubatch", "n_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_prompt == 0 and self.n_gen == 0:  # -p 0: generation only, -n 0: prompt only (llama-bench)
            raise ValueError("n_prompt and n_gen cannot both be 0")
        for name in ("n_prompt", "n_gen", "depth", "n_ctx"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_ubatch > self.n_batch:
            raise ValueError(f"ubatch ({self.n_ubatch}) must be <= batch ({self.n_batch})")
        if self.flash_attn not in FLASH_ATTN_VALUES:
            raise ValueError(f"flash_attn must be one of {', '.join(FLASH_ATTN_VALUES)}, got {self.flash_attn!r}")
        if self.graph_opt not in GRAPH_OPT_VALUES:
            raise ValueError(f"graph_opt must be one of {', '.join(GRAPH_OPT_VALUES)}, got {self.graph_opt!r}")
        for name in ("cache_type_k", "cache_type_v"):
            if getattr(self, name) not in CACHE_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(CACHE_TYPES)}, got {getattr(self, name)!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not (self.speed or self.quality):
            raise ValueError("a case measures speed, quality or both")
        if self.quality_ctx < 8 or self.quality_ctx % 2:
            raise ValueError(f"quality_ctx must be an even number >= 8, got {self.quality_ctx}")
        for name in ("quality_chunks", "quality_seed", "quality_top_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        needed = self.tokens_needed
        if self.speed and self.n_ctx and self.n_ctx < needed:
            raise ValueError(
                f"context {self.n_ctx} is too small for depth + n_prompt + n_gen = {needed}"
            )

    @property
    def tokens_needed(self) -> int:
        return self.depth + self.n_prompt + self.n_gen

    @property
    def ctx_effective(self) -> int:
        """The context the runtime is asked for (llama.cpp pads it further to 256). A quality-only
        case needs one chunk; a speed case keeps its own (the quality pass grows it after the reps)."""
        return self.n_ctx or pad_ctx(self.tokens_needed if self.speed else self.quality_ctx)

    @property
    def build_label(self) -> str:
        """What a preset or requantized case's model is built from, for messages: "tiny Q8_0",
        "model.Q4_1.gguf Q8_0"."""
        return f"{self.preset or self.source.rsplit('/', 1)[-1]} {self.quant_request}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["profile"] = list(self.profile)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "profile" in kw:
            kw["profile"] = tuple(kw["profile"])
        return cls(**kw)

    def key(self) -> str:
        """Stable identity of the case within a run (used by --resume). A preset case is known by
        preset + quant_request, a requantized one by source + quant_request, not by the file it is
        built into: it has its key before the build."""
        d = self.to_dict()
        d.pop("timeout_s")
        if self.preset or self.source:
            d.pop("model")
        return json.dumps(d, sort_keys=True)


# Fields of a case that identify "the same measurement" across runs (compare joins on them).
KEY_FIELDS: tuple[str, ...] = (
    "device", "backend", "model", "quant", "n_threads", "n_gpu_layers", "n_prompt", "n_gen",
    "depth", "n_ctx", "n_batch", "n_ubatch", "flash_attn", "cache_type_k", "cache_type_v", "ep", "graph_opt",
)


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


# Per-case model facts read from the file and the runtime (never from the file name).
MODEL_INFO_FIELDS: tuple[str, ...] = (
    "model_name", "model_sha256", "synthetic", "requantized_from", "arch", "quant", "bpw", "n_params", "model_bytes",
    "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_vocab", "n_ctx_train", "n_ctx_runtime",
)

# Columns of summary.csv, in order. stats.summarize() produces exactly these keys.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "run_id", "case_id", "device", "backend", "model", "model_sha256", "synthetic", "preset", "requantized_from", "quant",
    "bpw", "n_params", "model_bytes", "n_threads", "n_gpu_layers", "n_ctx", "n_prompt", "n_gen",
    "depth", "n_batch", "n_ubatch", "flash_attn", "cache_type_k", "cache_type_v", "ep", "graph_opt", "reps",
    "load_ms", "prefill_tok_s", "prefill_tok_s_std", "ttft_ms", "decode_tok_s", "decode_tok_s_std",
    "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99", "prefill_cv", "decode_cv",
    "weights_bytes", "kv_bytes", "kv_used_bytes", "compute_bytes", "rss_peak_bytes", "gpu_peak_bytes",
    "kv_share", "embed_share", "repack_bytes",
    "kld_mean", "kld_p99", "kld_max", "same_top_p", "delta_p_rms", "ppl", "ppl_ref", "ppl_ratio",
    "status", "error",
)


@dataclass(frozen=True)
class Field:
    """One summary / compare metric or displayed column, and how every view shows it.

    ``unit`` is the unit of the value as summaries and compare hold it (tok/s, ms, bytes, J/token,
    1 for fractions); ``fmt`` how it is displayed (edgebench.present.format): "" text or key value,
    "num" a number with three significant digits, "mib" bytes in MiB, "mj" joules in mJ, "pct" /
    "pct0" / "pct2" a fraction as a percentage, or a str.format spec. ``short`` is the prefix of the field in
    a case label ("t" -> "t=4"). ``center`` is the rule that makes one per-case value of a per-rep
    metric (edgebench.analysis.per_rep): "mean" for throughputs and energy (a total over reps divided
    by their count), "median" for latencies (one stalled rep must not move them), "max" for sizes and
    peaks (the peak of the case; buffer sizes are one value per case anyway); "" for a column that is
    not a per-rep metric. Summaries, compare's baseline / candidate columns, its ratio and its
    bootstrap interval all use that one center."""

    name: str
    unit: str = ""
    header: str = ""
    short: str = ""
    fmt: str = ""
    direction: str = ""  # "higher" or "lower" is better; "" for none
    center: str = ""  # "mean" | "median" | "max" | ""
    exact: bool = False  # deterministic (buffer sizes): no noise, any change past the threshold is real
    compared: bool = False  # checked by compare (--metrics, --fail-on)

    def __post_init__(self) -> None:
        if self.direction not in ("", "higher", "lower"):
            raise ValueError(f"direction must be higher, lower or empty, got {self.direction!r}")
        if self.center not in ("", "mean", "median", "max"):
            raise ValueError(f"center must be mean, median, max or empty, got {self.center!r}")
        if self.compared and not (self.center and self.direction):
            raise ValueError(f"compared field {self.name} needs a center and a direction")


def _key(name: str, header: str = "", short: str = "") -> Field:
    return Field(name, header=header or name, short=short)


def _metric(name: str, unit: str, header: str, fmt: str, direction: str = "", center: str = "",
            exact: bool = False, compared: bool = False) -> Field:
    return Field(name, unit, header, "", fmt, direction, center, exact, compared)


FIELDS: dict[str, Field] = {f.name: f for f in (
    _key("run_id", "run", "run"), _key("case_id", "#"), _key("device"), _key("backend"), _key("model"),
    _key("quant"), Field("bpw", "bit", "bpw", fmt="{:.2f}"), _key("n_threads", "t", "t"),
    _key("n_gpu_layers", "ngl", "ngl"), _key("n_prompt", "p", "p"), _key("n_gen", "n", "n"), _key("depth", "d", "d"),
    _key("n_ctx", "ctx", "ctx"), _key("n_batch", "b", "b"), _key("n_ubatch", "ub", "ub"),
    _key("flash_attn", "fa", "fa"), _key("cache_type_k", "ctk", "ctk"), _key("cache_type_v", "ctv", "ctv"),
    _key("ep", "ep", "ep"), _key("graph_opt", "graph_opt", "graph_opt"), _key("status"),
    _metric("load_ms", "ms", "load ms", "num", "lower", "mean"),
    _metric("prefill_tok_s", "tok/s", "prefill tok/s", "num", "higher", "mean", compared=True),
    _metric("prefill_tok_s_std", "tok/s", "±", "num"),
    _metric("decode_tok_s", "tok/s", "decode tok/s", "num", "higher", "mean", compared=True),
    _metric("decode_tok_s_std", "tok/s", "±", "num"),
    _metric("ttft_ms", "ms", "TTFT ms", "num", "lower", "median", compared=True),
    _metric("tpot_ms_p50", "ms", "TPOT p50 ms", "num", "lower", "median", compared=True),
    _metric("tpot_ms_p90", "ms", "p90 ms", "num", "lower", "median", compared=True),
    _metric("tpot_ms_p99", "ms", "p99 ms", "num", "lower", "median", compared=True),
    _metric("prefill_cv", "1", "prefill CV", "pct"), _metric("decode_cv", "1", "decode CV", "pct"),
    _metric("weights_bytes", "bytes", "weights MiB", "mib", "lower", "max", exact=True, compared=True),
    _metric("kv_bytes", "bytes", "KV MiB", "mib", "lower", "max", exact=True, compared=True),
    _metric("compute_bytes", "bytes", "compute MiB", "mib", "lower", "max", exact=True, compared=True),
    _metric("kv_used_bytes", "bytes", "KV used MiB", "mib", "lower", "max", exact=True),
    _metric("repack_bytes", "bytes", "repack MiB", "mib", "lower", "max", exact=True),
    _metric("rss_peak_bytes", "bytes", "peak RSS MiB", "mib", "lower", "max", compared=True),
    _metric("gpu_peak_bytes", "bytes", "GPU peak MiB", "mib", "lower", "max"),
    _metric("kv_share", "1", "KV share", "pct"), _metric("embed_share", "1", "embed share", "pct"),
    _metric("j_per_token_prefill", "J/token", "prefill mJ/tok", "mj", "lower", "mean", compared=True),
    _metric("j_per_token_decode", "J/token", "decode mJ/tok", "mj", "lower", "mean", compared=True),
    _metric("bytes_per_token", "bytes", "MiB read / token", "mib"),
    _metric("mem_bandwidth_gbs", "GB/s", "bandwidth GB/s", "{:g}"),
    _metric("bound_tok_s", "tok/s", "bound tok/s", "num", "higher"),
    _metric("roof_pct", "1", "% of BW bound", "pct0", "higher"),
    # Quality against the reference level (edgebench.analysis.quality): exact, the same tokens give
    # the same numbers; one value per case (per_rep returns it as a one-element array).
    _metric("kld_mean", "nats", "KLD", "num", "lower", "mean", exact=True, compared=True),
    _metric("kld_mean_err", "nats", "±", "num"),
    _metric("kld_median", "nats", "KLD median", "num", "lower"),
    _metric("kld_p90", "nats", "KLD p90", "num", "lower"),
    _metric("kld_p99", "nats", "KLD p99", "num", "lower"),
    _metric("kld_max", "nats", "KLD max", "num", "lower"),
    _metric("delta_p_mean", "1", "mean Δp", "pct2"),
    _metric("delta_p_rms", "1", "RMS Δp", "pct2", "lower"),
    _metric("same_top_p", "1", "same top", "pct2", "higher", "mean", exact=True, compared=True),
    _metric("same_top_p_err", "1", "±", "pct2"),
    _metric("ppl", "", "PPL", "{:.3f}", "lower"),
    _metric("ppl_err", "", "±", "{:.3f}"),
    _metric("ppl_ref", "", "PPL ref", "{:.3f}"),
    _metric("ppl_ratio", "", "PPL ratio", "{:.4f}", "lower", "mean", exact=True, compared=True),
    _metric("ppl_ratio_err", "", "±", "{:.4f}"),
    _metric("quality_tokens", "tokens", "scored tokens", "{:,.0f}"),
    _key("quality_note", "quality"),
)}

# The order in which fields name a case: "smollm-135m Q4_K_M t=4 p=512" (case_label).
LABEL_FIELDS: tuple[str, ...] = (
    "run_id", "device", "backend", "model", "quant", "n_threads", "n_gpu_layers", "n_prompt", "n_gen", "depth",
    "n_ctx", "n_batch", "n_ubatch", "flash_attn", "cache_type_k", "cache_type_v", "ep", "graph_opt",
)
_BARE_IN_LABEL = ("device", "backend", "model", "quant")


def label_value(v: Any) -> str:
    """A key value as text: 512.0 -> '512' (CSV and pandas turn integers into floats)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def case_label(values: dict[str, Any], fields) -> str:
    """The name of a case from the ``fields`` of ``values`` that it should show, in LABEL_FIELDS
    order: device, backend, model and quant bare, the run as "run ID", the rest as short=value
    ("t=4 p=512 d=0"). Blank values (None, "", NaN) are left out."""
    wanted = set(fields)
    parts = []
    for f in LABEL_FIELDS:
        if f not in wanted or f not in values:
            continue
        text = label_value(values[f])
        if text in ("", "None", "nan"):
            continue
        if f == "run_id":
            parts.append(f"run {text}")
        elif f in _BARE_IN_LABEL:
            parts.append(text)
        else:
            parts.append(f"{FIELDS[f].short}={text}")
    return " ".join(parts)


@dataclass(frozen=True)
class OpEvent:
    """Time of one executed node, as an op tracer saw it."""

    phase: str  # "prefill" | "decode"
    rep: int
    op: str  # runtime op name: MUL_MAT, FLASH_ATTN_EXT, MatMulNBits ...
    op_class: str  # one of OP_CLASSES
    name: str  # node name: ffn_down-12, result_output, /model/layers.0/attn/...
    ns: int
