"""Read and validate GGUF files without llama.cpp: metadata, tensor table, derived model facts.

The header is parsed here with ``struct`` over an mmap, using the gguf package's tables (value
types, ggml type block sizes, llama file types). gguf.GGUFReader is not used because it builds a
numpy view per array element: on a 256k-token vocabulary it takes ~7 s, where this parser takes
a fraction of a second and never touches tensor data, so validating a 4 GB file stays cheap.
Only GGUF versions 2 and 3 (little-endian) exist in practice; both are read.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgebench.errors import InputError
from edgebench.models.shape import ModelShape

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
# The provenance of a requantized level (models/requant.py): name in results -> GGUF metadata key.
PROVENANCE_KEYS = {"requantized_from": "edgebench.requantized_from", "source_sha256": "edgebench.source_sha256",
                   "source_name": "edgebench.source_name"}

# GGUFValueType -> struct format of a scalar (STRING = 8 and ARRAY = 9 are handled apart)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class TensorInfo(NamedTuple):
    name: str
    type: str  # ggml type name: "F16", "Q4_K", ...
    shape: tuple[int, ...]  # ggml order: ne[0] (the row length) first
    n_elements: int
    n_bytes: int
    offset: int  # absolute byte offset of the tensor's data in the file


class _Header(NamedTuple):
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    file_bytes: int


class _Cursor:
    """Sequential little-endian reads over a buffer; IndexError/struct.error when it runs out."""

    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def unpack(self, fmt: str):
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > self.size:
            raise IndexError("string runs past the end of the file")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            return self.array()
        raise ValueError(f"unknown metadata value type {vtype}")

    def array(self) -> list:
        itype, n = self.unpack("<I"), self.unpack("<Q")
        if itype in _SCALAR:
            size = struct.calcsize(_SCALAR[itype])
            if self.pos + n * size > self.size:
                raise IndexError("array runs past the end of the file")
            vals = list(struct.unpack_from(f"<{n}{_SCALAR[itype][1]}", self.buf, self.pos))
            self.pos += n * size
            return vals
        if itype == 8:  # strings: inlined, a vocabulary holds 256k of them
            buf, pos, out = self.buf, self.pos, []
            for _ in range(n):
                (k,) = struct.unpack_from("<Q", buf, pos)
                out.append(bytes(buf[pos + 8:pos + 8 + k]).decode("utf-8", "replace"))
                pos += 8 + k
            if pos > self.size:
                raise IndexError("array runs past the end of the file")
            self.pos = pos
            return out
        return [self.value(itype) for _ in range(n)]


def _parse(path: Path) -> _Header:
    """Parse the header and tensor table; InputError (one line) for anything unreadable."""
    try:
        return _parse_file(path)
    except OSError as e:  # unreadable (permissions, I/O error): still a one-line user error
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None


def _parse_file(path: Path) -> _Header:
    import gguf

    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a GGUF file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: empty file, not a GGUF model")
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 4 or head[:4] != GGUF_MAGIC:
            raise InputError(f"{path}: not a GGUF file (starts with {head[:4]!r}, expected {GGUF_MAGIC!r})")
        if len(head) < 8:
            raise InputError(f"{path}: truncated GGUF file ({size} bytes, header incomplete)")
        version = struct.unpack("<I", head[4:8])[0]
        if version not in SUPPORTED_VERSIONS:
            raise InputError(f"{path}: GGUF version {version} is not supported (supported: "
                             f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            try:
                return _parse_body(mm, size, version, gguf)
            except (IndexError, struct.error, ValueError, OverflowError, MemoryError, RecursionError) as e:
                # RecursionError: arrays nested thousands deep, a few KB of hostile header.
                # The detail quotes names from the file (a tensor name can be 64 KB): cut it short.
                detail = str(e) if len(str(e)) <= 160 else str(e)[:157] + "..."
                raise InputError(f"{path}: corrupt or truncated GGUF file ({size} bytes): {detail}") from None


def _parse_body(mm, size: int, version: int, gguf) -> _Header:
    c = _Cursor(mm, size)
    c.pos = 8
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    # every kv and tensor entry takes at least 8+4 bytes: bounds absurd counts from a bad header
    if (n_tensors + n_kv) * 12 > size:
        raise ValueError(f"header claims {n_tensors} tensors and {n_kv} metadata keys")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string()
        meta[key] = c.value(c.unpack("<I"))
    raw = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(c.unpack("<Q") for _ in range(n_dims))
        raw.append((name, shape, c.unpack("<I"), c.unpack("<Q")))
    align = meta.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise ValueError(f"general.alignment {align!r} is not a power of two")
    data_start = -(-c.pos // align) * align
    tensors = []
    for name, shape, tcode, rel in raw:
        try:
            qtype = gguf.GGMLQuantizationType(tcode)
        except ValueError:
            raise ValueError(f"tensor {name!r} has unknown ggml type {tcode}") from None
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if shape[0] % block:
            raise ValueError(f"tensor {name!r}: row of {shape[0]} is not a multiple of {qtype.name}'s block {block}")
        n_el = 1
        for d in shape:
            n_el *= d
        nbytes = n_el // block * type_size
        off = data_start + rel
        if off + nbytes > size:
            raise ValueError(f"tensor {name!r} ends at byte {off + nbytes}, past the end of the file")
        tensors.append(TensorInfo(name, qtype.name, shape, n_el, nbytes, off))
    return _Header(version, meta, tensors, size)


def validate_gguf(path: str | os.PathLike) -> None:
    """Raise InputError (one line) unless ``path`` is a readable, complete GGUF v2/v3 file:
    missing, a directory, bad magic, unsupported version, a header that cannot be parsed, or a
    tensor whose data runs past the end of the file. Reads the header only (a 4 GB file costs
    well under a second)."""
    _parse(Path(path))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """All metadata keys of a GGUF file (arrays as lists). Validates the file."""
    return _parse(Path(path)).metadata


def has_metadata(path: str | os.PathLike, expected: dict[str, Any]) -> bool:
    """True when ``path`` is a whole GGUF whose metadata holds every key of ``expected`` with that
    value; False when it is missing, corrupt, truncated or different (the caches rebuild it then)."""
    if not Path(path).exists():
        return False
    try:
        meta = read_metadata(path)
    except InputError:
        return False
    return all(meta.get(k) == v for k, v in expected.items())


def read_tensors(path: str | os.PathLike) -> list[TensorInfo]:
    """The tensor table of a GGUF file, in file order. Validates the file."""
    return _parse(Path(path)).tensors


@dataclass(frozen=True)
class GGUFInfo(ModelShape):
    """Facts about one GGUF model file: its shape (name: general.name; tied: no output.weight
    tensor, the output matrix is token_embd) and what the header says of the weights.
    Sizes in bytes; counts in elements / tokens."""

    path: str
    quant: str  # "Q4_K_M", "F16", ... from general.file_type, else the dominant 2-D tensor type
    n_params: int  # sum of tensor element counts (a tied output matrix counted once)
    tensor_bytes: int  # sum of tensor data bytes
    file_bytes: int
    bpw: float  # bits per weight: tensor_bytes * 8 / n_params
    embed_params: int  # token_embd + output (when untied) elements
    tensor_types: dict[str, dict[str, int]]  # group ("attn_q", "norm", ...) -> {type: count}
    synthetic_preset: str  # edgebench.preset metadata ("" for a real model)
    # Where a requantized level came from (models/requant.py writes it): requantized_from (the
    # source's quant), source_sha256, source_name; empty for a file edgebench did not requantize.
    provenance: dict[str, str]


def tensor_group(name: str) -> str:
    """The group a tensor is counted in: "norm" for every norm, "bias" for every bias, else the
    tensor's base name without block index ("blk.3.attn_q.weight" -> "attn_q")."""
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) > 2:
        parts = parts[2:]
    base = parts[0]
    if "norm" in base:
        return "norm"
    if parts[-1] == "bias":
        return "bias"
    return base


def _int(v: Any) -> int:
    """A hyperparameter that llama.cpp allows per layer (an array): the largest value."""
    if isinstance(v, list):
        return max(v) if v else 0
    return int(v or 0)


def _quant_label(meta: dict[str, Any], tensors: list[TensorInfo]) -> str:
    import gguf

    ft = meta.get("general.file_type")
    if isinstance(ft, int):
        try:
            name = gguf.LlamaFileType(ft).name
        except ValueError:
            name = ""
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    by_bytes: Counter[str] = Counter()
    for t in tensors:
        if len(t.shape) >= 2:
            by_bytes[t.type] += t.n_bytes
    return by_bytes.most_common(1)[0][0] if by_bytes else "unknown"


def read_gguf_info(path: str | os.PathLike) -> GGUFInfo:
    """Validate ``path`` and describe the model in it. Reads the header only; never loads weights."""
    h = _parse(Path(path))
    meta, tensors = h.metadata, h.tensors
    arch = str(meta.get("general.architecture", ""))

    def key(k: str, default: Any = 0) -> Any:
        return meta.get(f"{arch}.{k}", default)

    by_name = {t.name: t for t in tensors}
    n_embd, n_head = _int(key("embedding_length")), _int(key("attention.head_count"))
    embd = by_name.get("token_embd.weight")
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and tokens:
        n_vocab = len(tokens)
    elif key("vocab_size"):
        n_vocab = _int(key("vocab_size"))
    else:
        n_vocab = embd.shape[1] if embd and len(embd.shape) > 1 else 0
    out = by_name.get("output.weight")
    groups: dict[str, Counter[str]] = {}
    for t in tensors:
        groups.setdefault(tensor_group(t.name), Counter())[t.type] += 1
    n_params = sum(t.n_elements for t in tensors)
    tensor_bytes = sum(t.n_bytes for t in tensors)
    return GGUFInfo(
        path=str(path), arch=arch, name=str(meta.get("general.name", "")),
        quant=_quant_label(meta, tensors), n_params=n_params, tensor_bytes=tensor_bytes,
        file_bytes=h.file_bytes, bpw=tensor_bytes * 8 / n_params if n_params else 0.0,
        n_layer=_int(key("block_count")), n_embd=n_embd, n_head=n_head,
        n_head_kv=_int(key("attention.head_count_kv", n_head)),
        head_dim=_int(key("attention.key_length")) or (n_embd // n_head if n_head else 0),
        n_ff=_int(key("feed_forward_length")), n_vocab=n_vocab, n_ctx_train=_int(key("context_length")),
        tied=out is None,
        embed_params=(embd.n_elements if embd else 0) + (out.n_elements if out else 0),
        tensor_types={g: dict(c) for g, c in groups.items()},
        synthetic_preset=str(meta.get("edgebench.preset", "")),
        provenance={k: str(meta[key]) for k, key in PROVENANCE_KEYS.items() if key in meta},
    )


def ladder_order(paths) -> list[Path]:
    """GGUF files in quantization-ladder order: bits per weight high to low (F16 before Q8_0 before
    Q2_K, as a ladder is read), then by name; a file whose header cannot be read goes last (it is
    refused with its reason when the run validates it)."""
    def key(p: Path) -> tuple[float, str]:
        try:
            return -read_gguf_info(p).bpw, p.name
        except Exception:  # any damage: validated (and refused) later, with the reason
            return 1.0, p.name

    return sorted((Path(p) for p in paths), key=key)
