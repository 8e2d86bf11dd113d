"""The memory profiler's GPU path with a fake NVML (no GPU here), and its RSS path for real."""

import time
from types import SimpleNamespace

from edgebench.backends.base import MemoryInfo
from edgebench.profilers.memory import MemoryProfiler


class FakeBackend:
    capabilities = frozenset()

    def memory(self):
        return MemoryInfo({"CPU": 10}, {"CPU": 20}, {"CPU": 30})

    def kv_used_bytes(self):
        return 7


class FakeNvml:
    def __init__(self, pid, per_process=True):
        self.pid, self.per_process, self.used = pid, per_process, 100

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        if not self.per_process:
            raise RuntimeError("NotSupported")
        self.used += 1000
        return [SimpleNamespace(pid=self.pid, usedGpuMemory=self.used), SimpleNamespace(pid=1, usedGpuMemory=10**9)]

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=5000)


def _profile(nvml):
    import os

    mp = MemoryProfiler(interval_s=0.01, nvml=nvml(os.getpid()))
    mp.attach(FakeBackend())
    with mp.phase("decode", 0):
        time.sleep(0.15)
    mp.detach(None)
    return mp.collect()


def test_gpu_peak_is_this_process_only():
    s = _profile(FakeNvml)
    peaks = [x for x in s if x.metric == "gpu_peak_bytes"]
    timeline = [x for x in s if x.metric == "gpu_mem_bytes"]
    assert len(peaks) == 1 and peaks[0].label == "process"
    assert peaks[0].value == max(x.value for x in timeline) < 10**9  # the other process is not counted
    assert [x.metric for x in s].count("rss_peak_bytes") == 1 and any(x.metric == "kv_used_bytes" for x in s)


def test_device_level_fallback_is_labelled():
    s = _profile(lambda pid: FakeNvml(pid, per_process=False))
    (peak,) = [x for x in s if x.metric == "gpu_peak_bytes"]
    assert peak.label == "device" and peak.value == 5000


def test_no_gpu_no_gpu_samples():
    class NoGpu(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    s = _profile(NoGpu)
    assert not [x for x in s if x.metric.startswith("gpu_")]
