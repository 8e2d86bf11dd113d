"""A Case: one measured configuration, its validation, its key, and llama-bench's names for its tests."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

FLASH_ATTN_VALUES = ("auto", "on", "off")
GRAPH_OPT_VALUES = ("disable", "basic", "extended", "all")  # onnxruntime graph optimization levels
# What a case's reps time, in llama-bench's terms. "split": llama-bench's -p and -n tests, each on a
# cache holding `depth` tokens: a prefill of n_prompt tokens (pp), then, after emptying the cache
# and refilling the depth, n_gen single-token steps (tg). "pg": llama-bench's -pg P,N, the realistic
# sequence: n_gen steps right after the prompt, at positions depth+n_prompt onwards. Cases stored
# before the field existed were "pg" in all but name: that is its default.
TEST_KINDS = ("split", "pg")
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
    test: str = "pg"  # TEST_KINDS
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
    reps: int = 5  # timed reps; under -r auto (target_ci > 0) the most it may take
    target_ci: float = 0.0  # -r auto: stop when each throughput's 95% CI is within this fraction of its mean
    max_time_s: float = 0.0  # -r auto: stop after this many seconds of reps (0: no limit)
    warmup: bool = True
    profile: tuple[str, ...] = ()  # intrusive/extra profilers: "ops", "telemetry", ...
    preset: str = ""  # synthetic preset the model was built from ("" for a real model)
    quant_request: str = ""  # quant level asked for (presets, sources); the stored quant is read from the file
    source: str = ""  # a user's GGUF this case's model is requantized from at quant_request ("" otherwise)
    # A model named on the Hugging Face Hub (models/hub.py): "ORG/REPO", the commit it was resolved
    # at, and the file (or ONNX folder) inside the repo; "" for a local file or a preset.
    hub_repo: str = ""
    hub_revision: str = ""
    hub_file: str = ""
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
        if self.test not in TEST_KINDS:
            raise ValueError(f"test must be one of {', '.join(TEST_KINDS)}, got {self.test!r}")
        if self.flash_attn not in FLASH_ATTN_VALUES:
            raise ValueError(f"flash_attn must be one of {', '.join(FLASH_ATTN_VALUES)}, got {self.flash_attn!r}")
        if self.graph_opt not in GRAPH_OPT_VALUES:
            raise ValueError(f"graph_opt must be one of {', '.join(GRAPH_OPT_VALUES)}, got {self.graph_opt!r}")
        for name in ("cache_type_k", "cache_type_v"):
            if getattr(self, name) not in CACHE_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(CACHE_TYPES)}, got {getattr(self, name)!r}")
        if self.target_ci < 0 or self.max_time_s < 0:
            raise ValueError(f"target_ci and max_time_s must be >= 0, got {self.target_ci}, {self.max_time_s}")
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
        if self.test == "split":  # the cache is emptied between the pp and the tg test
            return self.depth + max(self.n_prompt, self.n_gen)
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
        for name, default in _LATER_FIELDS.items():  # keys stored before these existed: the same case
            if d[name] == default:
                d.pop(name)
        if self.preset or self.source:
            d.pop("model")
        return json.dumps(d, sort_keys=True)


# Case fields added after runs were stored, with the value that means what those runs did.
_LATER_FIELDS = {"test": "pg", "target_ci": 0.0, "max_time_s": 0.0, "hub_repo": "", "hub_revision": "", "hub_file": ""}

# Fields of a case that identify "the same measurement" across runs (compare joins on them).
KEY_FIELDS: tuple[str, ...] = (
    "device", "backend", "model", "quant", "n_threads", "n_gpu_layers", "test", "n_prompt", "n_gen",
    "depth", "n_ctx", "n_batch", "n_ubatch", "flash_attn", "cache_type_k", "cache_type_v", "ep", "graph_opt",
)


def llama_bench_name(test: str, n_prompt: int, n_gen: int, depth: int = 0) -> str:
    """llama-bench's name of what a case timed: "pp512 tg128" (a split case holds both of
    llama-bench's tests), "pp512", "tg128", "pp512+tg128" (-pg), with " @ d4096" at a depth."""
    n_prompt, n_gen, depth = int(n_prompt or 0), int(n_gen or 0), int(depth or 0)
    if test == "pg":
        name = f"pp{n_prompt}+tg{n_gen}"
    else:
        name = " ".join(p for p in (f"pp{n_prompt}" if n_prompt else "", f"tg{n_gen}" if n_gen else "") if p)
    return f"{name} @ d{depth}" if depth else name


def kv_positions(test: str, n_prompt: int, n_gen: int, depth: int = 0) -> dict[str, tuple[int, int] | None]:
    """The cache positions each timed phase covered, [first, last]: the prefill from the depth, the
    decode steps from the depth (split) or after the prompt (pg). None for a phase not run."""
    n_prompt, n_gen, depth = int(n_prompt or 0), int(n_gen or 0), int(depth or 0)
    start = depth + n_prompt if test == "pg" else depth
    return {"prefill": (depth, depth + n_prompt - 1) if n_prompt else None,
            "decode": (start, start + n_gen - 1) if n_gen else None}
