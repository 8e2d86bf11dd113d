"""Importing a backend module loads no runtime: the parent process plans a run (backend_class(name)
for quant levels and suffixes) without llama.cpp, onnx, onnxruntime or onnxruntime-genai in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUNTIMES = ("llama_cpp", "onnx", "onnxruntime", "onnxruntime_genai")


def test_importing_the_backends_loads_no_runtime():
    code = ("import importlib.util, sys\n"
            "import edgebench.backends.llama_cpp, edgebench.backends.onnxruntime\n"
            "genai = importlib.util.find_spec('onnxruntime_genai') is not None  # the optional extra\n"
            "if genai:\n"
            "    import edgebench.backends.onnxruntime_genai\n"
            "from edgebench.backends import backend_class\n"
            "for name in ('llama-cpp', 'onnxruntime') + (('onnxruntime-genai',) if genai else ()):\n"
            "    cls = backend_class(name)\n"
            "    assert cls.check_quant(cls.default_ladder[0]) and cls.suffixes\n"
            f"print(','.join(m for m in {RUNTIMES!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"importing the backends loaded {proc.stdout.strip()}"
