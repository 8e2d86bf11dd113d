"""A run as llama-bench's markdown table (`edgebench show RUN --format llama-bench`), so results can
be pasted where llama.cpp users share theirs. Layout as tools/llama-bench/llama-bench.cpp's
markdown_printer: model, size (MiB below 1 GiB, else GiB), params (M below 1e9, else B), backend,
ngl (GPU backends only), threads, the flags that differ from llama-bench's defaults or vary in the
run, test (pp512, tg128, pp512+tg128, " @ d4096"), and t/s as "mean ± std" over the reps (sample
standard deviation, as llama-bench's stdev). A split case is two lines, its pp and its tg test; a
pg case's t/s is (n_prompt + n_gen) / (prefill + decode time) of each rep, llama-bench's -pg."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# llama-bench field -> (display name, width: negative = left-aligned), in its column order
_WIDTH = {"model": -30, "size": 10, "params": 10, "backend": -10, "n_gpu_layers": 3, "n_threads": 7,
          "n_batch": 7, "n_ubatch": 8, "type_k": 6, "type_v": 6, "flash_attn": 3, "test": 15, "t/s": 20}
_NAME = {"n_gpu_layers": "ngl", "n_threads": "threads", "flash_attn": "fa"}
# flags shown only when they differ from llama-bench's defaults or vary (markdown_printer.print_header)
_FLAGS = {"n_batch": "2048", "n_ubatch": "512", "type_k": "f16", "type_v": "f16", "flash_attn": "-1"}
_FA = {"auto": "-1", "off": "0", "on": "1"}


def size_text(n_bytes: float) -> str:
    return f"{n_bytes / 1024**2:.2f} MiB" if n_bytes < 1024**3 else f"{n_bytes / 1024**3:.2f} GiB"


def params_text(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n < 1e9 else f"{n / 1e9:.2f} B"


def mean_std(values: np.ndarray) -> str:
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return f"{float(values.mean()):.2f} ± {std:.2f}"


def _backend(case: dict[str, Any], labels: set[str], env: dict[str, Any]) -> str:
    """llama-bench's backend name: the GPU backends holding weights, else CPU; an imported run
    keeps llama-bench's own; other runtimes are named as edgebench names them."""
    if env.get("backends"):
        return str(env["backends"])
    if case.get("backend") != "llama-cpp":
        return f"{case.get('backend')} {case.get('ep') or ''}".strip()
    gpus = sorted({re.sub(r"\d+$", "", lb) for lb in labels if lb and not lb.upper().startswith("CPU")})
    return ",".join(gpus) or "CPU"


def _depth(d: int) -> str:
    return f" @ d{d}" if d else ""


def test_lines(case: dict[str, Any], values: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(test, t/s) lines of one case from its per-rep values (analysis.per_rep)."""
    p, n, d = int(case.get("n_prompt") or 0), int(case.get("n_gen") or 0), int(case.get("depth") or 0)
    if (case.get("test") or "pg") == "pg" and p and n:
        if "ttft_ms" not in values or "decode_tok_s" not in values:
            return []
        seconds = values["ttft_ms"] / 1e3 + n / values["decode_tok_s"]
        return [(f"pp{p}+tg{n}{_depth(d)}", mean_std((p + n) / seconds))]
    out = []
    if p and "prefill_tok_s" in values:
        out.append((f"pp{p}{_depth(d)}", mean_std(values["prefill_tok_s"])))
    if n and "decode_tok_s" in values:
        out.append((f"tg{n}{_depth(d)}", mean_std(values["decode_tok_s"])))
    return out


def render(store, run_id: str) -> str:
    """The run's ok cases as llama-bench's markdown table, with its build footer."""
    from edgebench.analysis import per_rep
    from edgebench.analysis.summary import summarize_run

    run = store.get_run(run_id)
    rows = {r["case_id"]: r for r in summarize_run(store, run.run_id)}
    lines: list[dict[str, str]] = []
    for case in store.get_cases(run.run_id):
        row = rows.get(case["case_id"])
        if case.get("status") != "ok" or row is None:
            continue
        s = store.get_samples(run.run_id, case["case_id"])
        values = per_rep.rep_values(s, int(case["n_prompt"]), int(case["n_gen"]))
        labels = set(s[s["metric"] == "weights_bytes"]["label"]) if len(s) else set()
        size = row.get("weights_bytes") or row.get("model_bytes") or 0
        base = {"model": " ".join(str(x) for x in (row.get("model"), row.get("quant")) if x),
                "size": size_text(size), "params": params_text(row.get("n_params") or 0),
                "backend": _backend(case, labels, run.env or {}), "n_gpu_layers": str(case.get("n_gpu_layers")),
                "n_threads": str(case.get("n_threads")), "n_batch": str(case.get("n_batch")),
                "n_ubatch": str(case.get("n_ubatch")), "type_k": str(case.get("cache_type_k")),
                "type_v": str(case.get("cache_type_v")), "flash_attn": _FA.get(str(case.get("flash_attn")), "-1")}
        lines += [{**base, "test": test, "t/s": ts} for test, ts in test_lines(case, values)]
    fields = ["model", "size", "params", "backend"]
    if any(ln["backend"] != "CPU" for ln in lines):
        fields.append("n_gpu_layers")
    fields.append("n_threads")
    fields += [f for f, default in _FLAGS.items() if any(ln[f] != default for ln in lines)]
    fields += ["test", "t/s"]
    out = ["|" + "".join(f" {_cell(_NAME.get(f, f), _WIDTH[f])} |" for f in fields),
           "|" + "".join(f" {_rule(_WIDTH[f])} |" for f in fields)]
    out += ["|" + "".join(f" {_cell(ln[f], _WIDTH[f])} |" for f in fields) for ln in lines]
    env = run.env or {}
    build = (f"{env['build_commit']} ({env.get('build_number')})" if env.get("build_commit")
             else f"edgebench, llama-cpp-python {_version(store, run.run_id)}")
    return "\n".join(out) + f"\n\nbuild: {build}\n"


def _cell(text: str, width: int) -> str:
    return text.ljust(-width) if width < 0 else text.rjust(width)


def _rule(width: int) -> str:
    return "-" * -width if width < 0 else "-" * (width - 1) + ":"


def _version(store, run_id: str) -> str:
    for c in store.get_cases(run_id):
        v = ((c.get("info") or {}).get("versions") or {}).get("llama_cpp_python")
        if v:
            return v
    return "?"
