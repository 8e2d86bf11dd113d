"""The architecture rules, checked by the tools Python teams use for them: import-linter contracts
(pyproject.toml: five import floors from the CLI down to the records, backends and profilers
independent, no runtime below the run layer) and ruff; plus what no contract tool states: importing
the CLI loads no runtime, modules stay small, no grab-bag modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgebench"
RUNTIMES = ("llama_cpp", "onnxruntime", "onnxruntime_genai", "onnx", "pynvml", "matplotlib")
MAX_MODULE_LINES = 400


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    proc = _run("-c", "import sys; from importlinter.cli import lint_imports_command; sys.argv = ['lint-imports', "
                "'--no-cache']; sys.exit(lint_imports_command())")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.count(" KEPT") >= 3, proc.stdout[-2000:]


def test_ruff_is_clean():
    proc = _run("-m", "ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-1000:]


def test_importing_the_cli_loads_no_runtime():
    code = ("import sys, edgebench.cli; "
            f"print(','.join(m for m in {RUNTIMES!r} if m in sys.modules))")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"importing edgebench.cli loaded {proc.stdout.strip()}"


def test_the_help_runs_without_loading_a_runtime():
    code = ("import sys\nfrom edgebench.cli import main\nrc = main(['--help'])\n"
            f"print('LOADED=' + ','.join(m for m in {RUNTIMES!r} if m in sys.modules))\nsys.exit(rc)")
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED=\n" in proc.stdout + "\n" and "run" in proc.stdout


def test_modules_are_small_and_named_for_what_they_hold():
    too_long, grab_bags = [], []
    for path in PACKAGE.rglob("*.py"):
        n = sum(1 for _ in path.open())
        if n > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)} ({n} lines)")
        if path.stem in ("utils", "util", "helpers", "misc", "common"):
            grab_bags.append(str(path.relative_to(ROOT)))
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {', '.join(too_long)}"
    assert not grab_bags, f"grab-bag modules: {', '.join(grab_bags)}"


def test_the_layers_contract_is_five_floors_from_cli_to_records():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers")["layers"]
    assert layers[0] == "edgebench.cli" and "edgebench.records" in layers[-1] and len(layers) <= 5
    listed = {m.strip() for floor in layers for m in floor.split("|")}
    packages = {f"edgebench.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= listed, f"packages outside the layers contract: {', '.join(sorted(packages - listed))}"
