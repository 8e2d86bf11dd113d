"""The build-recipe stamp of a cached ONNX level: a build made by an older recipe is rebuilt, not reused.

The model cache finds a level by its file name (``<preset>-<level>.onnx``, ``onnx-from-gguf/<sha>/...``),
and a name says nothing of how the file was built: before this stamp, an int8 built by the old
per-tensor recipe was reused after the recipe changed. Each build now carries
``edgebench.recipe = <level>/<n>; fp32/<m>`` in its metadata_props (n, m: models.quant_levels.ONNX_RECIPES);
a build without the key is recipe 1 (every build before the stamp existed). ensure_level
(models.synth_onnx) rebuilds a target whose stamp is not the level's current one.

The stamp is read without parsing the model: metadata_props is a top-level field of ModelProto
(number 14), so the reader walks the top-level fields and seeks past the others, the graph and
its inline weights included (an fp32 model can be 1.8 GB inline; onnx.load_model would read it all).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from edgebench.models.quant_levels import ONNX_RECIPES

RECIPE_KEY = "edgebench.recipe"
_METADATA_PROPS = 14  # ModelProto.metadata_props (onnx.proto3)


def recipe(quant: str, versions: dict[str, int] = ONNX_RECIPES) -> str:
    """The stamp a build of ``quant`` made now carries: ``<level>/<n>``, and for a level quantized
    from the fp32 build ``; fp32/<m>`` too (a new fp32 recipe invalidates every level made from it)."""
    own = f"{quant}/{versions[quant]}"
    return own if quant == "fp32" else f"{own}; fp32/{versions['fp32']}"


def stamp(model, quant: str) -> None:
    """Set edgebench.quant and edgebench.recipe on ``model`` (an onnx.ModelProto) for ``quant``."""
    keep = [(e.key, e.value) for e in model.metadata_props if e.key not in ("edgebench.quant", RECIPE_KEY)]
    del model.metadata_props[:]
    for k, v in keep + [("edgebench.quant", quant), (RECIPE_KEY, recipe(quant))]:
        e = model.metadata_props.add()
        e.key, e.value = k, v


def is_current(path: Path, quant: str) -> bool:
    """Whether the cached ``path`` was built by ``quant``'s current recipe (False for a file that is
    not a readable ONNX header: it is rebuilt)."""
    try:
        props = read_metadata_props(path)
    except (OSError, ValueError):
        return False
    before_stamps = recipe(quant, dict.fromkeys(ONNX_RECIPES, 1))  # what an unstamped build was made by
    return props.get(RECIPE_KEY, before_stamps) == recipe(quant)


def _varint(f: BinaryIO) -> int | None:
    """The next base-128 varint; None at the end of the file."""
    shift = value = 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _entry(buf: bytes) -> tuple[str, str]:
    """A StringStringEntryProto: key = field 1, value = field 2 (both length-delimited)."""
    import io

    f, out = io.BytesIO(buf), {1: "", 2: ""}
    while (tag := _varint(f)) is not None:
        if tag & 7 != 2:
            raise ValueError("unexpected wire type in a metadata entry")
        n = _varint(f) or 0
        out[tag >> 3] = f.read(n).decode("utf-8", "replace")
    return out[1], out[2]


def read_metadata_props(path: Path) -> dict[str, str]:
    """metadata_props of the .onnx ``path``, read from the top-level fields only (module docstring).
    ValueError for bytes that are not a protobuf message."""
    props: dict[str, str] = {}
    with open(path, "rb") as f:
        while (tag := _varint(f)) is not None:
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _varint(f)
            elif wire == 1:
                f.seek(8, 1)
            elif wire == 5:
                f.seek(4, 1)
            elif wire == 2:
                n = _varint(f)
                if n is None:
                    raise ValueError("truncated field")
                if field == _METADATA_PROPS:
                    k, v = _entry(f.read(n))
                    props[k] = v
                else:
                    f.seek(n, 1)
            else:
                raise ValueError(f"wire type {wire} is not in ModelProto")
    return props
