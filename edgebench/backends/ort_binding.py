"""IO binding for the onnxruntime backend: onnxruntime's pybind objects when they are as expected,
else its public IOBinding API.

A decode step binds 2 * n_layer + 4 names. The public wrappers (``session.io_binding()``,
``bind_ortvalue_input``, ``get_outputs``...) check each value and wrap each output in a new
Python object, about twice the cost of the pybind calls beneath them (``InferenceSession._sess``,
``IOBinding._iobinding``, ``OrtValue._ortvalue``, ``OrtDevice._get_c_device``). Those are private:
make_binding checks at load that every one the fast path uses exists (as the ggml layout check
does for llama.cpp's structs) and, where one is missing, uses the public API with a one-line
warning. ``EDGEBENCH_ORT_BINDING=public`` forces the public path (tests; a suspected fast-path bug).

Values: each binding hands out, and takes back, its own kind of value (pybind ``OrtValue``s on the
private path, the public ``OrtValue`` wrappers on the other); both have ``numpy()`` and ``shape()``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

FORCE_ENV = "EDGEBENCH_ORT_BINDING"  # "public": never the private objects
# What the private path calls on each object: checked before it is used.
PRIVATE_API = {
    "session": ("run_with_iobinding",),
    "binding": ("bind_input", "bind_output", "bind_ortvalue_input", "bind_ortvalue_output", "get_outputs",
                "synchronize_outputs"),
    "device": (),
}


class PublicBinding:
    """onnxruntime's documented IO binding API (onnxruntime.IOBinding)."""

    kind = "public"

    def __init__(self, ort: Any, sess: Any, device: str) -> None:
        self._sess, self._b, self._device = sess, sess.io_binding(), device

    def value(self, ortvalue: Any) -> Any:
        """What bind_value takes for ``ortvalue`` (an onnxruntime.OrtValue)."""
        return ortvalue

    def bind_array(self, name: str, arr: np.ndarray) -> None:
        """Bind host memory without a copy: ``arr`` must stay alive until the run is over."""
        self._b.bind_cpu_input(name, arr)

    def bind_value(self, name: str, v: Any) -> None:
        self._b.bind_ortvalue_input(name, v)

    def bind_value_output(self, name: str, v: Any) -> None:
        """The run writes output ``name`` into ``v`` (the shared-buffer KV cache)."""
        self._b.bind_ortvalue_output(name, v)

    def bind_new_output(self, name: str) -> None:
        """onnxruntime allocates output ``name`` on the device at each run."""
        self._b.bind_output(name, self._device, 0)

    def run(self) -> list:
        """One session run; blocks until the outputs are ready. The outputs, in binding order."""
        self._sess.run_with_iobinding(self._b)
        if self._device != "cpu":
            self._b.synchronize_outputs()
        return self._b.get_outputs()


class PrivateBinding(PublicBinding):
    """The pybind objects under the public wrappers (module docstring)."""

    kind = "private"

    def __init__(self, ort: Any, sess: Any, device: str) -> None:
        self._sess, self._b, self._device = sess._sess, sess.io_binding()._iobinding, device
        self._dev = ort.OrtDevice.make(device, 0)._get_c_device()

    def value(self, ortvalue: Any) -> Any:
        return ortvalue._ortvalue

    def bind_array(self, name: str, arr: np.ndarray) -> None:
        self._b.bind_input(name, arr)

    def bind_new_output(self, name: str) -> None:
        self._b.bind_output(name, self._dev)

    def run(self) -> list:
        self._sess.run_with_iobinding(self._b, None)
        if self._device != "cpu":
            self._b.synchronize_outputs()
        return self._b.get_outputs()


def private_api_problems(ort: Any, sess: Any, device: str) -> list[str]:
    """What the private path needs and this onnxruntime lacks ([] when all is there)."""
    problems = []
    objects: dict[str, Any] = {}
    for what, get in (("session", lambda: sess._sess), ("binding", lambda: sess.io_binding()._iobinding),
                      ("device", lambda: ort.OrtDevice.make(device, 0)._get_c_device())):
        try:
            objects[what] = get()
        except (AttributeError, TypeError, RuntimeError) as e:
            problems.append(f"{what}: {type(e).__name__}: {e}")
    probe = ort.OrtValue.ortvalue_from_numpy(np.zeros(1, np.float32))
    if not hasattr(probe, "_ortvalue"):
        problems.append("OrtValue._ortvalue")
    for what, obj in objects.items():
        problems += [f"{what}.{m}" for m in PRIVATE_API[what] if not callable(getattr(obj, m, None))]
    return problems


def make_binding(ort: Any, sess: Any, device: str) -> PublicBinding:
    """The private fast path where this onnxruntime has every object it uses, else the public API
    with a one-line warning naming what is missing. Checked on each new session (a few getattrs)."""
    if os.environ.get(FORCE_ENV, "").lower() == "public":
        return PublicBinding(ort, sess, device)
    problems = private_api_problems(ort, sess, device)
    if problems:
        warnings.warn(f"onnxruntime {ort.__version__}: private IO binding objects missing "
                      f"({', '.join(problems[:3])}); using the public IOBinding API (slower per step)",
                      RuntimeWarning, stacklevel=2)
        return PublicBinding(ort, sess, device)
    return PrivateBinding(ort, sess, device)
