"""Shared fixtures: tiny synthetic models built once per test session (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("edgebench-home")


@pytest.fixture(scope="session")
def tiny_gguf(model_cache) -> dict[str, Path]:
    """The `tiny` llama-architecture preset, written with the gguf package and quantized by
    llama.cpp's own quantizer, at the levels the tests use."""
    from edgebench import synth

    return {q: synth.ensure_model("tiny", q, cache=model_cache) for q in ("F16", "Q8_0", "Q4_K_M")}
