"""A case's model, built where it cannot touch the measurement: a preset's synthetic model, a
user's GGUF requantized to a level, or a GGUF converted to another runtime's format.

The build runs in a forked child of the worker. Building holds far more memory than running (the
F16 source, the quantizer's buffers; an ONNX conversion held 2.9 GB for a 98 MB int4 model), and a
process keeps its peak (VmHWM) and much of what it freed for good, so a build in the measuring
process would show up as the case's peak RSS. The child also isolates the quantizer, C code that
can crash: a child killed by a signal is re-raised on the worker, so the runner reports "worker
crashed with SIGSEGV" as before. Progress lines go from the child straight to the runner (the
protocol fd is inherited; each is one write of one line); the path comes back on a pipe.

Test hook (nothing sets it otherwise): with EDGEBENCH_TEST_BUILD_SIGNAL=SIGSEGV (any signal name)
the build kills itself with that signal at its start, so tests can show that a crash while
building fails that case only.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable

from edgebench.records import Case
from edgebench.run import protocol as msg

Emit = Callable[[msg.Message], None]
BUILD_SIGNAL_ENV = "EDGEBENCH_TEST_BUILD_SIGNAL"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class BuildError(RuntimeError):
    """A preset's model could not be built; the message is the case's reason, as it is."""


def build(case: Case, emit: Emit) -> Case:
    """The case with its model path (built in a child process, or found in the cache there), the
    path reported to the runner with a Built message. Blocks; a build error is raised as BuildError
    with a one-line reason."""
    if not (case.preset or case.source) or case.model:
        return case
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build, send "ok <path>" or "error <reason>", never return
        os.close(r)
        code = 1
        try:
            die_with_parent(os.getppid())
            try:
                text, code = "ok " + str(_build_here(case, emit)), 0
            except BuildError as e:
                text = "error " + str(e)
            os.write(w, text.encode())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reply = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):  # crashed or killed while building: this worker ends the same way
        os.kill(os.getpid(), os.WTERMSIG(status))
    if not reply.startswith("ok "):
        raise BuildError(reply[len("error "):] if reply.startswith("error ") else
                         f"could not build {case.build_label}: the build exited with {os.WEXITSTATUS(status)}")
    path = reply[3:]
    emit(msg.Built(path))
    return dataclasses.replace(case, model=path)


def _build_here(case: Case, emit: Emit) -> str:
    from edgebench.backends import backend_class

    sig = os.environ.get(BUILD_SIGNAL_ENV)
    if sig:  # test hook (module docstring)
        os.kill(os.getpid(), signal.Signals[sig])
    progress = lambda done, total: emit(msg.Progress("build", done, total))  # noqa: E731
    try:
        cls = backend_class(case.backend)
        if case.source and hasattr(cls, "build_from_gguf"):  # another format
            return str(cls.build_from_gguf(case.source, case.quant_request, progress=progress))
        if case.source:
            from edgebench.models.requant import ensure_requantized

            return str(ensure_requantized(case.source, case.quant_request, progress=progress))
        return str(cls.build_synthetic(case.preset, case.quant_request, progress=progress))
    except Exception as e:
        raise BuildError(f"could not build {case.build_label}: {type(e).__name__}: {e}".splitlines()[0]) from e


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (Linux prctl); exits now if it is already gone. The worker calls
    it with the runner's pid, the build child with the worker's."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the worker's stdin watch still works
            pass
    if parent and os.getppid() != parent:  # died before prctl took effect
        os._exit(1)
