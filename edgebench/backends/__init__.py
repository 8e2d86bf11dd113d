"""Backend registry. Modules are imported lazily so a missing runtime breaks only its backend."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgebench.errors import InputError, did_you_mean

if TYPE_CHECKING:
    from edgebench.backends.base import Backend

# name -> "module:Class". Aliases map user spellings onto names.
_REGISTRY: dict[str, str] = {
    "llama-cpp": "edgebench.backends.llama_cpp:LlamaCppBackend",
    "onnxruntime": "edgebench.backends.onnxruntime:OnnxRuntimeBackend",
    "onnxruntime-genai": "edgebench.backends.onnxruntime_genai:OnnxRuntimeGenaiBackend",
    "fake": "edgebench.backends.fake:FakeBackend",
}
_ALIASES = {"llama.cpp": "llama-cpp", "llama_cpp": "llama-cpp", "llamacpp": "llama-cpp", "ort": "onnxruntime", "onnx": "onnxruntime",
            "genai": "onnxruntime-genai", "onnxruntime_genai": "onnxruntime-genai", "ort-genai": "onnxruntime-genai"}

BACKEND_NAMES: tuple[str, ...] = tuple(n for n in _REGISTRY if n != "fake")


def canonical_name(name: str) -> str:
    n = _ALIASES.get(name.lower(), name.lower())
    if n not in _REGISTRY:
        raise InputError(f"unknown backend {name!r}{did_you_mean(name, [*BACKEND_NAMES, *_ALIASES])}; "
                         f"backends: {', '.join(BACKEND_NAMES)}")
    return n


def backend_class(name: str) -> type[Backend]:
    module, cls = _REGISTRY[canonical_name(name)].split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"backend {name!r} is not available: {e}") from None
    return getattr(mod, cls)
