"""Shared fixtures: tiny synthetic models built once per test session (nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """EDGEBENCH_HOME for the whole session: tests never touch the user's ~/.cache/edgebench."""
    home = tmp_path_factory.mktemp("edgebench-home")
    old = os.environ.get("EDGEBENCH_HOME")
    os.environ["EDGEBENCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EDGEBENCH_HOME", None)
    else:
        os.environ["EDGEBENCH_HOME"] = old


@pytest.fixture(scope="session")
def tiny_gguf(model_cache) -> dict[str, Path]:
    """The `tiny` llama-architecture preset, written with the gguf package and quantized by
    llama.cpp's own quantizer, at the levels the tests use."""
    from edgebench.models import synth_gguf

    return {q: synth_gguf.ensure_model("tiny", q, cache=model_cache) for q in ("F16", "Q8_0", "Q4_K_M")}
