"""A user's own GGUF at other quant levels, made by llama.cpp's own quantizer (synth_gguf.quantize).

No level can be more accurate than its source: a level made from an already-quantized file (a
Q4_1 download, say) carries the source's quantization error on top of its own, and even its F16
is only the source dequantized. So when the source is quantized (its file type is not F16, BF16
or F32) it is first dequantized to F16 (llama_model_quantize with allow_requantize), that F16 is
the F16 level, and every other level is quantized from it; an unquantized source is quantized
to each level directly.

Every level records where it came from in its GGUF metadata (gguf_file.PROVENANCE_KEYS:
edgebench.requantized_from = the source's quant, edgebench.source_sha256, edgebench.source_name),
so the file says it wherever it goes and results read it back (gguf_file.GGUFInfo.provenance).

Cache: ``<models_dir>/requant/<source sha256[:16]>/<source stem>-<QUANT>.gguf``, each built
atomically under the cache lock and reused while its metadata names the same source.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from edgebench.models.cache import file_sha256, locked, make_dir, models_dir
from edgebench.models.gguf_file import PROVENANCE_KEYS, has_metadata, read_gguf_info
from edgebench.models.quant_levels import GGUF_QUANTS
from edgebench.models.synth_gguf import quantize

Progress = Callable[[int, int], None] | None

REQUANT_VERSION = "1"  # bump when files built by an older edgebench must be rebuilt
KEY_VERSION = "edgebench.requant_version"
UNQUANTIZED = ("F32", "F16", "BF16")
_QUANT_SUFFIX = re.compile(r"[._-](?:[IB]?Q\d\w*|F16|F32|BF16)$", re.IGNORECASE)
_MAX_VALUE = 127  # llama.cpp's kv override holds at most 127 bytes of a string


def source_quant(src: str | Path) -> str:
    """The quant level of the GGUF ``src`` ("Q4_1", "F16", ...). Validates it (InputError)."""
    return read_gguf_info(src).quant


def is_quantized(quant: str) -> bool:
    """True if a file of this level holds quantized weights (so levels from it are requantized)."""
    return quant.upper() not in UNQUANTIZED


def requant_note(quant: str) -> str:
    """What a user is told once when levels are requantized from a ``quant`` source."""
    return f"levels requantized from {quant}: no level is more accurate than its source"


def requant_dir(sha256: str, cache: Path | None = None) -> Path:
    """Folder of one source's levels: ``<models_dir>/requant/<sha256[:16]>``."""
    return models_dir(cache) / "requant" / sha256[:16]


def level_name(src: Path, quant: str) -> str:
    """``<source stem>-<QUANT>.gguf``; a quant suffix already in the stem is dropped
    (SmolLM2-135M-Instruct.Q4_1.gguf at Q8_0 -> SmolLM2-135M-Instruct-Q8_0.gguf)."""
    stem = _QUANT_SUFFIX.sub("", src.stem) or src.stem
    return f"{stem}-{quant}.gguf"


def _is_current(path: Path, sha256: str) -> bool:
    return has_metadata(path, {KEY_VERSION: REQUANT_VERSION, PROVENANCE_KEYS["source_sha256"]: sha256})


def _clip(s: str) -> str:
    b = s.encode()
    return s if len(b) <= _MAX_VALUE else b[:_MAX_VALUE].decode("utf-8", "ignore")


def ensure_requantized(src: str | Path, quant: str, cache: Path | None = None, progress: Progress = None) -> Path:
    """Path of ``src`` at ``quant`` in the requant cache, built first if missing or stale.

    ``src`` must be a complete GGUF file and ``quant`` a GGUF level (InputError otherwise). When
    ``src`` is quantized, the F16 level (``src`` dequantized) is built first and the others are
    quantized from it. ``progress(done_bytes, total_bytes)`` restarts at each stage. Blocks
    (seconds for a 135M model, minutes for billions of parameters); RuntimeError if llama.cpp
    fails (a file it cannot load, say)."""
    src = Path(src).expanduser()
    q = GGUF_QUANTS.check(quant)
    from_quant = source_quant(src)
    sha = file_sha256(src)
    d = make_dir(requant_dir(sha, cache))
    target = d / level_name(src, q)
    if _is_current(target, sha):
        return target
    requantize = is_quantized(from_quant)
    base = ensure_requantized(src, "F16", cache, progress) if requantize and q != "F16" else src
    meta = {PROVENANCE_KEYS["requantized_from"]: from_quant, PROVENANCE_KEYS["source_sha256"]: sha,
            PROVENANCE_KEYS["source_name"]: _clip(src.name), KEY_VERSION: REQUANT_VERSION}
    with locked(target):
        if _is_current(target, sha):  # another process built it while we waited
            return target
        for stale in d.glob(f".{target.name}.tmp-*"):  # left by a killed builder; we hold the lock
            stale.unlink(missing_ok=True)
        # Only the dequantizing step meets quantized tensors; the F16 base has none.
        quantize(base, target, q, progress=progress, allow_requantize=base is src and requantize, metadata=meta)
    return target
