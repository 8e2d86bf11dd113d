"""Memory: the runtime's own buffer sizes, the KV cache in use, and the worker's RSS.

Passive: a background thread samples RSS every ``interval_s`` (psutil, ~20 us a read) while the
model loads and between the timed phases. Inside a timed phase (prefill, decode) it sleeps, with no
wake-ups: on a 2-core board each wake-up preempts a compute thread that the others then wait for at
ggml's barriers (benchmarks/memory_overhead.py: decode 0.977 of the sampler-off speed at F16 on 2
cores with a 50 ms sampler). A timed phase is sampled at its edges instead, untimed, and its peak
takes the OS high-water mark (VmHWM) where that grew during the phase, so a spike inside it is not
missed; runtimes keep what they allocate within a phase, so its end sample holds the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

from edgebench.profilers.base import Profiler
from edgebench.records import Sample

if TYPE_CHECKING:
    from edgebench.backends.base import Backend


def vm_hwm_bytes() -> int | None:
    """The process's peak RSS so far (Linux /proc/self/status VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


TIMED_PHASES = ("prefill", "decode")  # the worker's timed windows: no sampler wake-ups inside them


class MemoryProfiler(Profiler):
    name: ClassVar[str] = "memory"

    def __init__(self, interval_s: float = 0.05, nvml=None):
        import psutil

        self.interval_s = interval_s
        self._nvml = nvml  # a pynvml-like module; None: pynvml if a GPU is there
        self._gpus: list = []
        self._gpu_timeline: list[tuple[int, int, str]] = []  # (t_ns, bytes, "process"|"device")
        self._proc = psutil.Process()
        self._backend: Backend | None = None
        self._samples: list[Sample] = []
        self._timeline: list[tuple[int, int]] = []  # (t_ns, rss)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._awake = threading.Event()  # cleared inside timed phases: the sampler waits, never wakes
        self._awake.set()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter_ns()

    def attach(self, backend: Backend) -> None:
        self._backend = backend
        self._open_nvml()
        self._thread = threading.Thread(target=self._run, name="edgebench-rss", daemon=True)
        self._thread.start()

    def _open_nvml(self) -> None:
        """GPU memory through NVML where there is a GPU; nothing (and no warning) where there is none."""
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._gpus = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self._nvml.nvmlDeviceGetCount())]
        except Exception:  # no driver, no library, NotSupported (Jetson): no GPU figures
            self._gpus = []

    def _gpu_bytes(self) -> tuple[int, str] | None:
        """This process's GPU memory (or, where NVML cannot tell per process, the devices' use)."""
        nv, pid, total, per_process = self._nvml, self._proc.pid, 0, True
        for h in self._gpus:
            try:
                total += sum(p.usedGpuMemory or 0 for p in nv.nvmlDeviceGetComputeRunningProcesses(h) if p.pid == pid)
            except Exception:
                try:
                    total += nv.nvmlDeviceGetMemoryInfo(h).used
                    per_process = False
                except Exception:
                    return None
        return total, "process" if per_process else "device"

    def _sample(self) -> None:
        rss = self._proc.memory_info().rss
        gpu = self._gpu_bytes() if self._gpus else None
        t = time.perf_counter_ns() - self._t0
        with self._lock:
            self._timeline.append((t, rss))
            if gpu is not None:
                self._gpu_timeline.append((t, *gpu))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._awake.wait()  # blocks through a timed phase
            if self._stop.is_set():
                break
            self._sample()
            self._stop.wait(self.interval_s)

    def detach(self, backend: Backend) -> None:
        self._stop.set()
        self._awake.set()
        if self._thread:
            self._thread.join()

    @contextmanager
    def phase(self, phase: str, rep: int) -> Iterator[None]:
        start = time.perf_counter_ns() - self._t0
        timed = phase in TIMED_PHASES
        hwm_before = vm_hwm_bytes()
        if timed:  # edge samples around the timed region, and no sampler wake-ups inside it
            self._sample()
            self._awake.clear()
        try:
            yield
        finally:
            self._awake.set()
        if timed:
            self._sample()
        end = time.perf_counter_ns() - self._t0
        rss_now = self._proc.memory_info().rss  # after the timed region: not measured time
        with self._lock:
            window = [(t, v) for t, v in self._timeline if start <= t <= end]
            self._timeline = [(t, v) for t, v in self._timeline if t > end]
            gpu = [(t, v, how) for t, v, how in self._gpu_timeline if start <= t <= end]
            self._gpu_timeline = [g for g in self._gpu_timeline if g[0] > end]
        for i, (t, v, how) in enumerate(gpu):
            self._samples.append(Sample(rep, phase, "gpu_mem_bytes", v, idx=i, label=how, t_ns=t))
        if gpu:
            self._samples.append(Sample(rep, phase, "gpu_peak_bytes", max(v for _, v, _ in gpu), label=gpu[0][2]))
        for i, (t, v) in enumerate(window):
            self._samples.append(Sample(rep, phase, "rss_bytes", v, idx=i, t_ns=t))
        peak = max([v for _, v in window] + [rss_now])
        hwm = vm_hwm_bytes()
        # VmHWM is a lifetime high-water mark: it bounds the phase peak only if it grew in the phase.
        if hwm is not None and (phase == "load" or (hwm_before is not None and hwm > hwm_before)):
            peak = max(peak, hwm)
        self._samples.append(Sample(rep, phase, "rss_peak_bytes", peak))
        if self._backend is None:
            return
        if phase == "load":
            mem = self._backend.memory()
            for metric, by_buf in (("weights_bytes", mem.weights_by_buffer), ("kv_bytes", mem.kv_by_buffer),
                                   ("compute_bytes", mem.compute_by_buffer), ("output_bytes", mem.output_by_buffer),
                                   ("repack_bytes", mem.repack_by_buffer)):
                for buf, b in by_buf.items():
                    self._samples.append(Sample(-1, "load", metric, b, label=buf))
        else:
            used = self._backend.kv_used_bytes()
            if used is not None:
                self._samples.append(Sample(rep, phase, "kv_used_bytes", used))

    def collect(self) -> list[Sample]:
        out, self._samples = self._samples, []
        return out
