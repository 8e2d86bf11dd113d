"""What a fleet run ships to the boards: this edgebench as a wheel, the sweep rewritten for the
boards' model folder, and the model files the sweep names (with their sha256)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgebench.errors import InputError
from edgebench.models.cache import file_sha256, home

MODELS_DIR_MARK = "@MODELS_DIR@"  # replaced by each board's edgebench_models_dir in the playbook
_MODEL_SUFFIXES = (".gguf", ".onnx", ".fake")
_SOURCE_FILES = ("pyproject.toml", "README.md")


def source_root() -> Path:
    """The source tree this edgebench runs from (a checkout or an editable install)."""
    import edgebench

    root = Path(edgebench.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise InputError("this edgebench is not installed from a source tree, so no wheel can be built for the "
                         "boards: set edgebench_install: present in the inventory (boards with edgebench installed)")
    return root


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    files = [root / f for f in _SOURCE_FILES] + sorted(
        p for p in (root / "edgebench").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_wheel(cache: Path | None = None) -> tuple[Path, str, str]:
    """-> (wheel, its sha256, version). Built once per source state (``pip wheel --no-deps`` on a
    copy of the tree, so the checkout gains no build/ folder) and cached under
    $EDGEBENCH_HOME/fleet-wheels/<hash of the sources>/."""
    from importlib import metadata

    root = source_root()
    out = home(cache) / "fleet-wheels" / _tree_hash(root)
    wheels = sorted(out.glob("edgebench-*.whl"))
    if not wheels:
        with tempfile.TemporaryDirectory(prefix="edgebench-wheel-") as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(root / "edgebench", src / "edgebench", symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__"))
            for f in _SOURCE_FILES:
                shutil.copy2(root / f, src / f)
            proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                                   "-w", str(Path(tmp) / "dist"), str(src)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise InputError(f"building the edgebench wheel failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
            out.mkdir(parents=True, exist_ok=True)
            for w in (Path(tmp) / "dist").glob("edgebench-*.whl"):
                shutil.copy2(w, out / w.name)
        wheels = sorted(out.glob("edgebench-*.whl"))
    wheel = wheels[-1]
    return wheel, file_sha256(wheel), metadata.version("edgebench")


def device_sweep(config: dict[str, Any], config_dir: Path) -> tuple[str, list[dict[str, str]]]:
    """The sweep as the boards read it: model files named by MODELS_DIR_MARK/<name>; presets stay
    names (each board builds them). -> (TOML text, [{name, src, sha256}] of the files to ship)."""
    models = config.get("models", config.get("model", []))
    models = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    ship, names = [], []
    for m in models:
        p = Path(m) if Path(m).is_absolute() else config_dir / m
        if p.suffix.lower() in _MODEL_SUFFIXES or p.exists():
            if not p.is_file():
                raise InputError(f"sweep model {m}: a fleet sweep names model files or presets, and {p} is not a file")
            ship.append({"name": p.name, "src": str(p.resolve()), "sha256": file_sha256(p)})
            names.append(f"{MODELS_DIR_MARK}/{p.name}")
        else:
            names.append(m)
    doc = {k: v for k, v in config.items() if k not in ("model", "models", "device", "verify")}
    if names:
        doc["models"] = names
    lines = []
    for k, v in doc.items():
        if isinstance(v, dict):
            raise InputError(f"sweep key {k}: tables are not sweep options")
        lines.append(f"{k} = {json.dumps(v)}")  # JSON scalars and arrays are valid TOML
    return "\n".join(lines) + "\n", ship
