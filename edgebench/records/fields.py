"""Summary columns and displayed fields: how every view names, formats and compares a value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Per-case model facts read from the file and the runtime (never from the file name).
MODEL_INFO_FIELDS: tuple[str, ...] = (
    "model_name", "model_sha256", "synthetic", "requantized_from", "source_name", "source_sha256", "arch", "quant",
    "bpw", "n_params", "model_bytes",
    "n_layer", "n_embd", "n_head", "n_head_kv", "head_dim", "n_vocab", "n_ctx_train", "n_ctx_runtime",
)

# Columns of summary.csv, in order. stats.summarize() produces exactly these keys.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "run_id", "case_id", "device", "device_verified", "backend", "model", "model_sha256", "synthetic", "preset",
    "requantized_from", "source_name", "source_sha256", "quant",
    "bpw", "n_params", "model_bytes", "n_threads", "n_gpu_layers", "n_ctx", "test", "n_prompt", "n_gen",
    "depth", "prefill_pos", "decode_pos", "n_batch", "n_ubatch", "flash_attn", "cache_type_k", "cache_type_v", "ep", "graph_opt", "reps",
    "load_ms", "prefill_tok_s", "prefill_tok_s_std", "ttft_ms", "decode_tok_s", "decode_tok_s_std",
    "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99", "prefill_cv", "decode_cv", "reps_used", "ci_pct", "reps_discarded",
    "reps_stop", "processes", "prefill_within_cv", "prefill_between_cv", "decode_within_cv", "decode_between_cv",
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
    _key("run_id", "run", "run"), _key("case_id", "#"), _key("device"), _key("device_verified", "verified"),
    _key("backend"), _key("model"),
    _key("quant"), Field("bpw", "bit", "bpw", fmt="{:.2f}"), _key("n_threads", "t", "t"),
    _key("n_gpu_layers", "ngl", "ngl"), _key("test"), _key("prefill_pos", "pp KV pos"), _key("decode_pos", "tg KV pos"),
    _key("n_prompt", "p", "p"), _key("n_gen", "n", "n"), _key("depth", "d", "d"),
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
    Field("reps_used", "reps", "reps", fmt="{:.0f}"), Field("ci_pct", "%", "95% CI ±%", fmt="{:.1f}"),
    Field("reps_discarded", "reps", "discarded", fmt="{:.0f}"), _key("reps_stop", "stopped by"),
    # --processes N: the spread of the reps within one worker process (pooled) and between the
    # processes' means, relative to the mean (analysis/summary.py process_spread)
    Field("processes", "1", "processes", fmt="{:.0f}"),
    _metric("prefill_within_cv", "1", "prefill within-process CV", "pct"),
    _metric("prefill_between_cv", "1", "prefill between-process CV", "pct"),
    _metric("decode_within_cv", "1", "decode within-process CV", "pct"),
    _metric("decode_between_cv", "1", "decode between-process CV", "pct"),
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
    "run_id", "device", "backend", "model", "quant", "test", "n_threads", "n_gpu_layers", "n_prompt", "n_gen", "depth",
    "n_ctx", "n_batch", "n_ubatch", "flash_attn", "cache_type_k", "cache_type_v", "ep", "graph_opt",
)
_BARE_IN_LABEL = ("device", "backend", "model", "quant", "test")


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
