"""Import a llama-bench result file (store/llama_bench.py) with what only this floor can see: the
model file itself when it is on this disk (its general.name, quant and sha256, so the import joins
an edgebench run of the same file), and the device profile of this host when llama-bench ran here
(the same CPU model), so compare needs no --force."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgebench.store.database import Store


def describe_local(filename: str, size: int) -> dict[str, Any] | None:
    """The facts of a GGUF at ``filename`` when it exists here and has ``size`` weight bytes."""
    from edgebench.models.cache import file_sha256
    from edgebench.models.gguf_file import read_gguf_info

    p = Path(filename)
    if not p.is_file() or p.suffix.lower() != ".gguf":
        return None
    try:
        info = read_gguf_info(p)
    except Exception:  # an unreadable file describes nothing: the import keeps llama-bench's words
        return None
    if size and info.tensor_bytes != size:
        return None
    return {"model_name": info.name, "quant": info.quant, "arch": info.arch, "bpw": info.bpw,
            "model_sha256": file_sha256(p)}


def device_for(cpu_info: str, gpu_info: str) -> str:
    """This host's device profile when llama-bench's CPU is this host's CPU, else llama-bench's
    own description of the machine."""
    from edgebench.machine import profiles

    ev = profiles.probe()
    if cpu_info and (ev.get("cpu_model") or "").strip() == cpu_info.strip():
        return profiles.resolve("auto", evidence=ev)[0].name
    return ", ".join(p for p in (cpu_info, gpu_info) if p) or "unknown (llama-bench)"


def ingest_file(store: Store, path: Path, device: str = "auto") -> tuple[str, int]:
    """Store ``path`` as an imported run on ``device`` ("auto": device_for). Returns (run_id, cases)."""
    from edgebench.store import llama_bench

    if device == "auto":
        first = llama_bench.read_results(path)[0]
        device = device_for(str(first.get("cpu_info") or ""), str(first.get("gpu_info") or ""))
    return llama_bench.ingest_results(store, path, device, describe_local)
