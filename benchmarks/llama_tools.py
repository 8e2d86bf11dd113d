"""Find or build llama.cpp's own tools (llama-bench, llama-perplexity) from the llama-cpp-python sdist
of the installed version, so a cross-check runs the same llama.cpp the package binds.

Cached outside the repository under ~/.cache/edgebench/llama-tools/<version>/bin; never used by tests.

    python3 benchmarks/llama_tools.py            # build if missing, print the bin folder
    python3 benchmarks/llama_tools.py --jobs 2
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

TOOLS = ("llama-bench", "llama-perplexity")


def installed_version() -> str:
    return importlib.metadata.version("llama_cpp_python")


def cache_dir(version: str | None = None) -> Path:
    root = Path(os.environ.get("EDGEBENCH_LLAMA_TOOLS", Path.home() / ".cache" / "edgebench" / "llama-tools"))
    return root / (version or installed_version())


def find_tool(name: str, version: str | None = None) -> Path | None:
    """The cached tool for the installed llama-cpp-python, or None when it has not been built."""
    p = cache_dir(version) / "bin" / name
    return p if p.is_file() and os.access(p, os.X_OK) else None


def _sdist(version: str, where: Path) -> Path:
    # --no-binary for this one package only: ":all:" would also build its build dependencies
    # (scikit-build-core, hatchling...) from source, recursively.
    where.mkdir(parents=True, exist_ok=True)
    found = sorted(where.glob(f"llama_cpp_python-{version}.tar.gz")) + sorted(where.glob(f"llama-cpp-python-{version}.tar.gz"))
    if found:
        return found[0]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
                    f"llama-cpp-python=={version}", "-d", str(where)], check=True)
    found = sorted(where.glob("*.tar.gz"))
    if not found:
        raise RuntimeError(f"pip download left no sdist in {where}")
    return found[0]


def build(version: str | None = None, jobs: int = 2, native: bool = True) -> Path:
    """Download the sdist, unpack it, build llama-bench and llama-perplexity; return the bin folder."""
    version = version or installed_version()
    root = cache_dir(version)
    bin_dir = root / "bin"
    if all(find_tool(t, version) for t in TOOLS):
        return bin_dir
    src_root = root / "src"
    if not (src_root / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        tgz = _sdist(version, root / "sdist")
        shutil.rmtree(src_root, ignore_errors=True)
        with tarfile.open(tgz) as tf:
            top = tf.getnames()[0].split("/")[0]
            tf.extractall(root, filter="data")
        (root / top).rename(src_root)
    llama = src_root / "vendor" / "llama.cpp"
    build_dir = root / "build"
    subprocess.run(["cmake", "-S", str(llama), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", f"-DGGML_NATIVE={'ON' if native else 'OFF'}",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF"]
                   + (["-G", "Ninja"] if shutil.which("ninja") else []), check=True)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", *TOOLS, "-j", str(jobs)], check=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for t in TOOLS:
        built = next((p for p in (build_dir / "bin" / t, build_dir / t) if p.is_file()), None)
        if built is None:
            raise RuntimeError(f"{t} was not built under {build_dir}")
        shutil.copy2(built, bin_dir / t)
    return bin_dir


def ensure_tool(name: str, jobs: int = 2) -> Path:
    return find_tool(name) or build(jobs=jobs) / name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--version", help="llama-cpp-python version (default: the installed one)")
    ap.add_argument("--no-native", action="store_true")
    a = ap.parse_args()
    print(build(a.version, a.jobs, not a.no_native))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
