"""Shape-faithful synthetic GGUF models: a preset's exact tensor shapes, random weights.

Speed and memory of a transformer depend on its shapes, not on its weight values, so a GGUF with
the tensor names and shapes llama.cpp expects for the preset's architecture (checked against the
vendored llama.cpp: src/models/{llama,qwen2,gemma2,phi3,stablelm}.cpp, src/llama-arch.cpp,
src/llama-vocab.cpp) loads and runs exactly like the real model. Weights are seeded normal values
(std 0.02) in F16, norms ~1 and biases in F32, as convert_hf_to_gguf.py writes them. The
vocabulary is a generated SentencePiece-style ("llama") one of the real size; inputs are random
token ids anyway, so the tokenizer never matters to a measurement.

The tensors and their shapes come from models.presets.preset_tensor_shapes, the levels from
models.quant_levels.GGUF_QUANTS. Levels other than F16 are made from the F16 file by llama.cpp's
own quantizer (llama_model_quantize through llama-cpp-python's ctypes), so each tensor gets the
type llama.cpp would give a real model (including its fallbacks for rows that are not a multiple
of a K-quant's 256-value block).
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgebench.errors import InputError
from edgebench.models.cache import locked, make_dir, models_dir
from edgebench.models.presets import Preset, get_preset, preset_tensor_shapes
from edgebench.models.quant_levels import GGUF_QUANTS

# Bump whenever the bytes the writer produces change: cached files carrying another value (in the
# metadata key below, copied into quantized files by the quantizer) are rebuilt.
SYNTH_VERSION = 1
KEY_PRESET = "edgebench.preset"
KEY_VERSION = "edgebench.synth_version"

WEIGHT_STD = 0.02
CHUNK_VALUES = 1 << 22  # values generated at once: 16 MiB of float32, whatever the preset's size

Progress = Callable[[int, int], None] | None


def _metadata(p: Preset, gguf) -> list[tuple[str, object, object]]:
    """(key, value, GGUFValueType) of every key llama.cpp reads for the preset's arch."""
    T, a = gguf.GGUFValueType, p.arch
    n_rot = int(round(p.head_dim * p.partial_rotary))
    kv: list[tuple[str, object, object]] = [
        ("general.name", p.name, T.STRING),
        ("general.file_type", int(gguf.LlamaFileType.MOSTLY_F16), T.UINT32),
        ("general.quantization_version", gguf.GGML_QUANT_VERSION, T.UINT32),
        (KEY_PRESET, p.name, T.STRING),
        (KEY_VERSION, SYNTH_VERSION, T.UINT32),
        (f"{a}.vocab_size", p.n_vocab, T.UINT32),
        (f"{a}.context_length", p.n_ctx_train, T.UINT32),
        (f"{a}.embedding_length", p.n_embd, T.UINT32),
        (f"{a}.block_count", p.n_layer, T.UINT32),
        (f"{a}.feed_forward_length", p.n_ff, T.UINT32),
        (f"{a}.attention.head_count", p.n_head, T.UINT32),
        (f"{a}.attention.head_count_kv", p.n_head_kv, T.UINT32),
        # written always: gemma-2's head_dim is not n_embd / n_head
        (f"{a}.attention.key_length", p.head_dim, T.UINT32),
        (f"{a}.attention.value_length", p.head_dim, T.UINT32),
        (f"{a}.rope.dimension_count", n_rot, T.UINT32),  # stablelm-2 rotates 25% of each head
        (f"{a}.rope.freq_base", p.rope_theta, T.FLOAT32),
    ]
    if a == "stablelm":
        kv.append((f"{a}.attention.layer_norm_epsilon", p.norm_eps, T.FLOAT32))
    else:
        kv.append((f"{a}.attention.layer_norm_rms_epsilon", p.norm_eps, T.FLOAT32))
    if a == "gemma2":  # Gemma-2 config.json values (llama.cpp would assume none without them)
        kv += [(f"{a}.attn_logit_softcapping", 50.0, T.FLOAT32),
               (f"{a}.final_logit_softcapping", 30.0, T.FLOAT32),
               (f"{a}.attention.sliding_window", p.sliding_window or 4096, T.UINT32)]
    return kv


# llama.cpp's vocab loader sets attributes on these by name for models named "phi-3"/"phi3"
# (llama-vocab.cpp, load(): unordered_map::at throws without them); Phi-3's vocab has them too.
_EXTRA_TOKENS = {"phi3": ("<|endoftext|>", "<|end|>")}


def _vocab(n_vocab: int, arch: str, gguf) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary llama.cpp accepts: <unk> <s> </s>, the 256 byte tokens
    (llama.cpp looks up <0x0A> for the newline), unique generated pieces, then the arch's extra
    control tokens at the end."""
    extra = _EXTRA_TOKENS.get(arch, ())
    if n_vocab < 3 + len(extra):
        raise ValueError(f"n_vocab must be >= {3 + len(extra)} for {arch}, got {n_vocab}")
    tt = gguf.TokenType
    tokens, types = ["<unk>", "<s>", "</s>"], [tt.UNKNOWN, tt.CONTROL, tt.CONTROL]
    n_bytes = min(256, n_vocab - 3 - len(extra))
    tokens += [f"<0x{b:02X}>" for b in range(n_bytes)]
    types += [tt.BYTE] * n_bytes
    rest = n_vocab - len(tokens) - len(extra)
    tokens += [f"\u2581t{i}" for i in range(rest)] + list(extra)
    types += [tt.NORMAL] * rest + [tt.CONTROL] * len(extra)
    scores = [0.0] * (3 + n_bytes) + [-float(i) for i in range(rest)] + [0.0] * len(extra)
    return tokens, scores, [int(t) for t in types]


# -- writing -----------------------------------------------------------------------------------
def write_gguf(preset: Preset, path: Path, progress: Progress = None, seed: int = 0) -> Path:
    """Write the preset as an F16 GGUF (F32 norms and biases) at ``path``; returns ``path``.

    Streams tensor by tensor in chunks of CHUNK_VALUES values, so memory stays ~100 MB whatever
    the preset's size. Writes a temporary file beside ``path``, fsyncs it and renames it into
    place: ``path`` never holds a partial file. ``progress(done_bytes, total_bytes)`` is called
    after each chunk (bytes of tensor data). Blocks (a 3B preset takes about a minute)."""
    import gguf

    p, path = preset, Path(path)
    shapes = preset_tensor_shapes(p)
    dtypes = {n: np.float32 if len(s) == 1 else np.float16 for n, s in shapes.items()}
    nbytes = {n: int(np.prod(s)) * np.dtype(dtypes[n]).itemsize for n, s in shapes.items()}
    total, done = sum(nbytes.values()), 0
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    w = gguf.GGUFWriter(tmp, p.arch)
    try:
        for key, val, vtype in _metadata(p, gguf):
            w.add_key_value(key, val, vtype)
        tokens, scores, types = _vocab(p.n_vocab, p.arch, gguf)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        for name, shape in shapes.items():
            # numpy shape is ggml's reversed (rows, row length)
            w.add_tensor_info(name, tuple(reversed(shape)), np.dtype(dtypes[name]), nbytes[name])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        fout = w.fout[0]  # tensor data is streamed here directly: GGUFWriter wants whole arrays
        w.write_padding(fout, fout.tell())
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            for start in range(0, n, CHUNK_VALUES):
                k = min(CHUNK_VALUES, n - start)
                if len(shape) == 1 and "norm.weight" in name:
                    vals = 1.0 + 0.1 * rng.standard_normal(k, dtype=np.float32)  # scales ~1
                else:
                    vals = WEIGHT_STD * rng.standard_normal(k, dtype=np.float32)
                fout.write(vals.astype(dtypes[name]).tobytes())
                done += k * np.dtype(dtypes[name]).itemsize
                if progress:
                    progress(done, total)
            w.write_padding(fout, nbytes[name])
        fout.flush()
        os.fsync(fout.fileno())
        w.close()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
    return path


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- quantizing --------------------------------------------------------------------------------
_TENSOR_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)")


class _QuantLog:
    """Captures llama.cpp's log while the quantizer runs (keeps the CLI readable, turns per-tensor
    lines into progress, keeps the error text), then restores whatever callback was set before."""

    def __init__(self, ll, sizes: dict[str, int], progress: Progress):
        self.ll, self.sizes, self.progress = ll, sizes, progress
        self.total, self.done, self.text = sum(sizes.values()), 0, []
        self._prev_name: str | None = None

    def _on_log(self, level, text, user_data):  # noqa: ARG002
        s = text.decode("utf-8", "replace") if text else ""
        self.text.append(s)
        m = _TENSOR_LINE.match(s)
        if m and self.progress:
            if self._prev_name is not None:  # a tensor's line starts when the previous one is done
                self.done += self.sizes.get(self._prev_name, 0)
                self.progress(self.done, self.total)
            self._prev_name = m.group(1)

    def __enter__(self):
        self._old_cb = self.ll.llama_log_callback()
        self._old_ud = ctypes.c_void_p()
        self.ll.llama_log_get(ctypes.byref(self._old_cb), ctypes.byref(self._old_ud))
        # Referenced by self for as long as llama.cpp may call it (a collected callback crashes).
        self._cb = self.ll.llama_log_callback(self._on_log)
        self.ll.llama_log_set(self._cb, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc):
        self.ll.llama_log_set(self._old_cb, self._old_ud)

    def error(self) -> str:
        lines = [ln.strip() for ln in "".join(self.text).splitlines() if ln.strip()]
        errs = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
        return (errs or lines or ["no message from llama.cpp"])[-1]


def quantize(src: Path, dst: Path, quant: str, n_threads: int | None = None, progress: Progress = None,
             allow_requantize: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """Quantize the GGUF ``src`` to ``quant`` at ``dst`` with llama.cpp's own quantizer; returns
    ``dst``. Atomic like write_gguf. ``progress(done_bytes, total_bytes)`` counts source tensor
    bytes. Blocks; ``n_threads`` defaults to all cores. RuntimeError if llama.cpp fails.

    ``allow_requantize`` lets llama.cpp convert tensors that are already quantized (it
    dequantizes them first); ``metadata`` string keys are written into ``dst``'s header (the
    quantizer's kv_overrides, set after the source's own keys are copied)."""
    import llama_cpp as ll

    from edgebench.models.gguf_file import read_tensors

    q = GGUF_QUANTS.check(quant)
    src, dst = Path(src), Path(dst)
    sizes = {t.name: t.n_bytes for t in read_tensors(src)}  # validates src too
    ftype_name = "LLAMA_FTYPE_ALL_F32" if q == "F32" else f"LLAMA_FTYPE_MOSTLY_{q}"
    ftype = getattr(ll, ftype_name, None)
    if ftype is None:
        raise InputError(f"quant level {q} is not known to this llama-cpp-python ({ll.__version__})")
    params = ll.llama_model_quantize_default_params()
    params.nthread = n_threads or os.cpu_count() or 1
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    overrides = _kv_overrides(ll, metadata or {})  # referenced until the quantizer returns
    if overrides is not None:
        params.kv_overrides = overrides
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        ll.llama_backend_init()
        with _QuantLog(ll, sizes, progress) as log:
            rc = ll.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.exists():
            raise RuntimeError(f"llama.cpp could not quantize {src.name} to {q}: {log.error()}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    finally:
        tmp.unlink(missing_ok=True)
    if progress:
        progress(sum(sizes.values()), sum(sizes.values()))
    return dst


def _kv_overrides(ll, metadata: dict[str, str]):
    """A llama_model_kv_override array for string keys, ended by an entry with an empty key (as
    llama-quant.cpp reads it), or None for no keys. Keys and values are at most 127 bytes."""
    if not metadata:
        return None
    arr = (ll.llama_model_kv_override * (len(metadata) + 1))()
    for o, (k, v) in zip(arr, metadata.items()):
        key, val = k.encode(), str(v).encode()
        if len(key) > 127 or len(val) > 127:
            raise ValueError(f"metadata {k!r} = {v!r} is longer than llama.cpp's 127 bytes")
        o.tag, o.key, o.value.val_str = ll.LLAMA_KV_OVERRIDE_TYPE_STR, key, val
    return arr


# -- the cache ---------------------------------------------------------------------------------
def _is_current(path: Path, preset: str) -> bool:
    """True if ``path`` is a whole GGUF of ``preset`` written by this version of the writer."""
    from edgebench.models.gguf_file import has_metadata

    return has_metadata(path, {KEY_VERSION: SYNTH_VERSION, KEY_PRESET: preset})


def ensure_model(preset: str, quant: str, cache: Path | None = None, progress: Progress = None) -> Path:
    """Path of ``<models_dir>/<preset>-<QUANT>.gguf``, built first if missing or stale.

    The F16 file is written first (it is the F16 level itself) and every other level is quantized
    from it. A lock file per target serialises concurrent builders: the second waits, then reuses
    the first one's file. ``progress(done_bytes, total_bytes)`` restarts at each stage (writing
    the F16 file, then quantizing). Blocks: minutes for a multi-GB preset."""
    p, q = get_preset(preset), GGUF_QUANTS.check(quant)
    d = make_dir(models_dir(cache))
    target = d / f"{p.name}-{q}.gguf"
    if _is_current(target, p.name):
        return target
    src = ensure_model(p.name, "F16", cache, progress) if q != "F16" else None
    with locked(target):
        if _is_current(target, p.name):  # another process built it while we waited
            return target
        for stale in d.glob(f".{target.name}.tmp-*"):  # left by a killed builder; we hold the lock
            stale.unlink(missing_ok=True)
        if src is None:
            write_gguf(p, target, progress=progress)
        else:
            quantize(src, target, q, progress=progress)
    return target
