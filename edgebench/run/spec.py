"""RunSpec: what the user asked for (CLI flags or sweep.toml), parsed and validated.

Nothing here knows the backends or profilers: run/plan.py canonicalises their names and expands
the spec into Cases.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebench.errors import InputError
from edgebench.run.processes import MAX_PROCESSES_FACTOR

# llama-bench's defaults, so numbers are comparable; QUICK is the built-in default job.
LLAMA_BENCH_DEFAULTS = dict(n_prompt=[512], n_gen=[128], depth=[0], reps=5)
QUICK_DEFAULTS = dict(n_prompt=[128], n_gen=[32], depth=[0], reps=3)
DEFAULT_PRESET = "smollm-135m"

# sweep parameter -> (Case field, type). Each may be a list in the spec.
SWEEP_PARAMS: dict[str, tuple[str, type]] = {
    "n_prompt": ("n_prompt", int), "n_gen": ("n_gen", int), "depth": ("depth", int),
    "threads": ("n_threads", int), "ctx": ("n_ctx", int), "batch": ("n_batch", int),
    "ubatch": ("n_ubatch", int), "n_gpu_layers": ("n_gpu_layers", int),
    "flash_attn": ("flash_attn", str), "cache_type_k": ("cache_type_k", str),
    "cache_type_v": ("cache_type_v", str), "ep": ("ep", str), "graph_opt": ("graph_opt", str),
}
SCALAR_PARAMS: dict[str, type] = {"reps": int, "timeout": float, "warmup": bool, "target_ci": str, "max_reps": int,
                                   "max_time": float, "processes": int, "max_processes": int}
AUTO_REPS_DEFAULTS = dict(target_ci=0.02, max_reps=20)  # -r auto: a 2% interval, at most 20 reps
REPS_HELP = ("Timed repetitions (default 5), or 'auto': repeat until the 95% confidence interval of each "
             "throughput is within --target-ci.")
AUTO_HELP = {"--target-ci": "-r auto: the 95% CI half-width to reach, e.g. 2% (default) or 0.02.",
             "--max-reps": "-r auto: at most this many reps (default 20).",
             "--max-time": "-r auto: stop a case's reps after this many seconds (default: no limit; with "
                           "--processes, over all its processes).",
             "--max-processes": "-r auto with --processes N: at most this many worker processes per case, "
                                "added while the interval over processes is wider than --target-ci "
                                f"(default {MAX_PROCESSES_FACTOR} N)."}
PG_HELP = ("llama-bench's -pg P,N: a prompt of P tokens, then N decode steps right after it (TTFT and the "
           "decode speed a chat sees). Repeatable.")
LIST_PARAMS = ("models", "quants", "backends", "profile")
OTHER_PARAMS = ("device", "verify", "out", "cooldown", "cooldown_temp", "report", "pg")
# quality options (TOML keys = the CLI's long names with '_'; --text is quality_text in the spec)
QUALITY_PARAMS: dict[str, type] = {"quality": bool, "quality_ctx": int, "quality_chunks": int, "text": str,
                                   "quality_ref": str, "quality_seed": int, "quality_top_k": int, "max_kld": float}
QUALITY_HELP = {"--quality-ctx": "Tokens per quality chunk (default 512); the second half is scored.",
                "--quality-chunks": "Chunks to score (default: all the text gives; 4 of a generated stream).",
                "--text": "Text to score (tokenized by each model); default: a stream the reference generates.",
                "--quality-ref": "Reference: a level of the same model (default F16) or a model file.",
                "--quality-seed": "Seed of the generated stream (default 0).",
                "--quality-top-k": "Reference log-probs kept per token (default 4096: mean KLD about 0.4% low on "
                                   "SmolLM2-135M; 16384 keeps the error under 1e-4 at 4x the size).",
                "--max-kld": "Name the fastest level whose mean KLD is at most this."}
# Help of `run`'s sweep flags (each repeatable, comma lists work): SWEEP_PARAMS key -> help.
SWEEP_HELP = {"n_prompt": "Prompt tokens of a pp test, prefilled from the depth (llama-bench default 512; 0: none).",
              "n_gen": "Decode steps of a tg test, from the depth (default 128; 0: none).",
              "depth": "Tokens already in the cache (default 0).",
              "threads": "Threads (default: physical cores).",
              "ctx": "Context size (default depth+prompt+gen, padded to 256).",
              "batch": "Logical batch (default 2048).", "ubatch": "Physical batch (default 512).",
              "n_gpu_layers": "Layers on the GPU (default 99).", "flash_attn": "auto|on|off (or 1|0).",
              "cache_type_k": "f16|q8_0|q4_0 ...", "cache_type_v": "f16|q8_0|q4_0 ...",
              "ep": "onnxruntime execution provider: cpu|cuda|tensorrt.",
              "graph_opt": "onnxruntime graph optimization: disable|basic|extended|all (default all)."}
FLASH_ATTN_ALIASES = {"1": "on", "0": "off"}  # llama-bench's spelling of -fa


@dataclass(frozen=True)
class RunSpec:
    models: tuple[str, ...] = (DEFAULT_PRESET,)
    quants: tuple[str, ...] = ()  # empty: the default ladder for presets
    backends: tuple[str, ...] = ("llama-cpp",)
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # SWEEP_PARAMS keys
    # llama-bench's tests (records.TEST_KINDS): -p and -n pair up into "split" cases, each -pg pair
    # is a "pg" case. False only in specs stored before that, whose -p x -n cases were all "pg".
    split_tests: bool = False
    pg: tuple[tuple[int, int], ...] = ()
    reps: int = 5  # under -r auto (target_ci > 0): the most reps a case may take
    target_ci: float = 0.0  # -r auto: the relative 95% CI half-width to reach; 0: fixed reps
    max_time: float = 0.0  # -r auto: seconds of reps per case at most; 0: no limit
    processes: int = 1  # worker processes per case, the reps split among them (run/processes.py)
    max_processes: int = 0  # -r auto with processes >= 2: the most a case may get; 0: 4 x processes
    warmup: bool = True
    timeout: float = 900.0
    profile: tuple[str, ...] = ()
    device: str = "auto"
    verify: bool = True
    cooldown: float = 0.0
    cooldown_temp: float | None = None
    speed: bool = True  # False: `edgebench quality` (the quality pass without the speed reps)
    quality: bool = False
    quality_ctx: int = 512
    quality_chunks: int = 0  # 0: all the text gives (a generated stream: run/quality.QUALITY_STREAM_CHUNKS)
    quality_text: str = ""
    quality_ref: str = ""  # a level of the same model or a file; "" = the backend's reference_quant
    quality_seed: int = 0
    quality_top_k: int = 0
    max_kld: float | None = None  # the report names the fastest level under it

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sweep"] = {k: list(v) for k, v in self.sweep.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        kw = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        for k in ("models", "quants", "backends", "profile"):
            if k in kw:
                kw[k] = tuple(kw[k])
        kw["sweep"] = {k: tuple(v) for k, v in kw.get("sweep", {}).items()}
        kw["pg"] = tuple(tuple(p) for p in kw.get("pg", ()))
        return cls(**kw)


def parse_list(text: str | int | float | list | tuple | None, typ: type, name: str) -> tuple[Any, ...]:
    """'1,2,4' -> (1, 2, 4); a TOML list or scalar works too, and so does a list of comma lists (a
    repeated flag: ['64', '128,256'] -> (64, 128, 256)). Errors name the option."""
    if text is None:
        return ()
    parts = list(text) if isinstance(text, (list, tuple)) else [text]
    items = [i for part in parts for i in (str(part).split(",") if isinstance(part, str) else [part])]
    out = []
    for item in items:
        s = str(item).strip()
        if not s:
            raise InputError(f"--{name.replace('_', '-')}: empty value in {text!r}")
        try:
            out.append(_convert(s, typ))
        except ValueError:
            raise InputError(f"--{name.replace('_', '-')}: {s!r} is not a valid {typ.__name__}") from None
    return tuple(out)


def parse_pg(values: Any) -> tuple[tuple[int, int], ...]:
    """-pg values: each "P,N" (a flag, or a TOML string) or [P, N] (TOML), both > 0."""
    if values is None:
        return ()
    if not isinstance(values, (str, list, tuple)):  # pg = 5 in a sweep file
        raise InputError(f"-pg takes PROMPT,GEN (two integers, e.g. 512,128), got {values!r}")
    items = [values] if isinstance(values, str) or (isinstance(values, (list, tuple)) and values
                                                     and all(isinstance(v, int) for v in values)) else list(values)
    out = []
    for item in items:
        parts = item.split(",") if isinstance(item, str) else list(item) if isinstance(item, (list, tuple)) else [item]
        try:
            p, n = (int(str(x).strip()) for x in parts)
        except ValueError:
            raise InputError(f"-pg takes PROMPT,GEN (two integers, e.g. 512,128), got {item!r}") from None
        if p < 1 or n < 1:
            raise InputError(f"-pg {p},{n}: both the prompt and the generated tokens must be > 0")
        out.append((p, n))
    return tuple(dict.fromkeys(out))


def _convert(s: str, typ: type) -> Any:
    if typ is bool:
        if s.lower() in ("1", "true", "yes", "on"):
            return True
        if s.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(s)
    return typ(s)


def load_toml(path: Path) -> dict[str, Any]:
    """Read a sweep file. Keys: the CLI's long option names with '_' (see examples/sweep.toml)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config file {path} is not valid TOML: {e}") from None
    known = set(SWEEP_PARAMS) | set(SCALAR_PARAMS) | set(LIST_PARAMS) | set(OTHER_PARAMS) | set(QUALITY_PARAMS) \
        | {"model", "quant", "backend"}
    unknown = sorted(set(data) - known)
    if unknown:
        import difflib  # the whole list of keys would make a 500-character "one-line" error

        near = sorted({m for k in unknown for m in difflib.get_close_matches(k, known, n=2)})
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise InputError(f"config file {path}: unknown key(s) {', '.join(unknown)[:80]}{hint}; "
                         f"the keys are the long option names of `edgebench run` with '_'")
    return data


def build_spec(options: dict[str, Any], config: dict[str, Any] | None = None) -> RunSpec:
    """Merge a config file (lower priority) and CLI options (None = not given) into a RunSpec.

    With no model anywhere, the built-in default job runs: the smollm-135m preset over the default
    quant ladder at a quick size. With a model, sizes default to llama-bench's. Backend and profiler
    names are kept as given: plan.canonical_spec checks them against the registries.
    """
    merged: dict[str, Any] = {}
    for src in (config or {}), options:
        for k, v in src.items():
            k = {"model": "models", "quant": "quants", "backend": "backends"}.get(k, k)
            if v is not None and v != () and v != []:
                merged[k] = v
    models = parse_list(merged.get("models"), str, "model")
    defaults = LLAMA_BENCH_DEFAULTS if models else QUICK_DEFAULTS
    sweep: dict[str, tuple[Any, ...]] = {}
    for name, (_, typ) in SWEEP_PARAMS.items():
        vals = parse_list(merged.get(name), typ, name)
        if name == "flash_attn":
            vals = tuple(FLASH_ATTN_ALIASES.get(v, v) for v in vals)
        if vals:
            sweep[name] = tuple(dict.fromkeys(vals))  # drop repeats, keep order
        elif name in defaults:
            sweep[name] = tuple(defaults[name])
    reps, target_ci, max_time = _reps_options(merged, defaults["reps"])
    try:
        timeout = float(merged.get("timeout", 900.0))
        cooldown = float(merged.get("cooldown", 0.0))
        ctemp = merged.get("cooldown_temp")
        ctemp = float(ctemp) if ctemp is not None else None
    except (TypeError, ValueError) as e:
        raise InputError(f"invalid number: {e}") from None
    if timeout <= 0:
        raise InputError(f"--timeout must be > 0, got {timeout}")
    if cooldown < 0:
        raise InputError(f"--cooldown must be >= 0, got {cooldown}")
    try:
        processes = int(merged.get("processes", 1))
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"--processes must be a whole number, got {merged.get('processes')!r}") from None
    if processes < 1:
        raise InputError(f"--processes must be >= 1, got {processes}")
    max_processes = _max_processes(merged.get("max_processes"), processes, target_ci)
    return RunSpec(
        processes=processes, max_processes=max_processes,
        **_quality_options(merged),
        models=models or (DEFAULT_PRESET,), quants=parse_list(merged.get("quants"), str, "quant"),
        backends=parse_list(merged.get("backends"), str, "backend") or ("llama-cpp",),
        profile=parse_list(merged.get("profile"), str, "profile"), sweep=sweep, reps=reps, target_ci=target_ci,
        max_time=max_time, warmup=bool(merged.get("warmup", True)),
        timeout=timeout, device=str(merged.get("device", "auto")),
        verify=bool(merged.get("verify", True)), cooldown=cooldown, cooldown_temp=ctemp,
        split_tests=True, pg=parse_pg(merged.get("pg")),
    )


def _reps_options(merged: dict[str, Any], default: int) -> tuple[int, float, float]:
    """(reps, target_ci, max_time) from -r N | -r auto, --target-ci, --max-reps, --max-time."""
    auto = str(merged.get("reps", "")).strip().lower() == "auto"
    given = [f"--{k.replace('_', '-')}" for k in ("target_ci", "max_reps", "max_time") if merged.get(k) is not None]
    if given and not auto:
        raise InputError(f"{given[0]} needs -r auto")
    try:
        if not auto:
            reps = int(merged.get("reps", default))
            if reps < 1:
                raise InputError(f"--reps must be >= 1 or 'auto', got {reps}")
            return reps, 0.0, 0.0
        text = str(merged.get("target_ci", AUTO_REPS_DEFAULTS["target_ci"])).strip()
        target = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        max_reps = int(merged.get("max_reps", AUTO_REPS_DEFAULTS["max_reps"]))
        max_time = float(merged.get("max_time", 0.0))
    except (TypeError, ValueError, OverflowError) as e:  # reps = [0], max_reps = inf in a sweep file
        raise InputError(f"--reps/--target-ci/--max-reps/--max-time: {e}") from None
    from edgebench.run.reps import MIN_AUTO_REPS

    if not 0 < target < 1:
        raise InputError(f"--target-ci must be between 0 and 100%, got {merged.get('target_ci')}")
    if max_reps < MIN_AUTO_REPS:
        raise InputError(f"--max-reps must be >= {MIN_AUTO_REPS} (the fewest reps an interval is taken from), got {max_reps}")
    if max_time < 0:
        raise InputError(f"--max-time must be >= 0, got {max_time}")
    return max_reps, target, max_time


def _max_processes(given: Any, processes: int, target_ci: float) -> int:
    """--max-processes (0: the default, run/processes.py): only with -r auto and --processes 2 or
    more (fixed -r N runs exactly N processes), and not below --processes."""
    if given is None:
        return 0
    try:
        n = int(given)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"--max-processes must be a whole number, got {given!r}") from None
    if not target_ci:
        raise InputError("--max-processes needs -r auto (fixed -r N runs exactly --processes processes)")
    if processes < 2:
        raise InputError("--max-processes needs --processes 2 or more (an interval over processes needs two)")
    if n < processes:
        raise InputError(f"--max-processes must be >= --processes ({processes}), got {n}")
    return n


def _quality_options(merged: dict[str, Any]) -> dict[str, Any]:
    """The quality fields of a RunSpec from merged options ("text" or "quality_text" for the text)."""
    out: dict[str, Any] = {}
    if "quality_text" in merged and "text" not in merged:
        merged = merged | {"text": merged["quality_text"]}
    for name, typ in QUALITY_PARAMS.items():
        if name not in merged:
            continue
        opt = f"--{name.replace('_', '-')}"
        try:
            v = _convert(str(merged[name]), typ) if typ is not str else str(merged[name])
        except ValueError:
            raise InputError(f"{opt}: {merged[name]!r} is not a valid {typ.__name__}") from None
        out["quality_text" if name == "text" else name] = v
    if "speed" in merged:
        out["speed"] = bool(merged["speed"])
    q = out.get("quality", False) or not out.get("speed", True)
    out["quality"] = bool(q)
    ctx = out.get("quality_ctx", 512)
    if ctx < 8 or ctx % 2:
        raise InputError(f"--quality-ctx must be an even number >= 8, got {ctx}")
    for name in ("quality_chunks", "quality_seed", "quality_top_k"):
        if out.get(name, 0) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {out[name]}")
    if out.get("max_kld") is not None and out["max_kld"] <= 0:
        raise InputError(f"--max-kld must be > 0, got {out['max_kld']}")
    used = [f"--{n.replace('_', '-')}" for n in ("quality_ctx", "quality_chunks", "quality_ref", "quality_seed", "quality_top_k")
            if n in out] + (["--text"] if "quality_text" in out else [])
    if used and not out["quality"]:
        raise InputError(f"{used[0]} needs --quality")
    return out
