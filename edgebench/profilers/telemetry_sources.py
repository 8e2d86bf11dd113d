"""Telemetry sources, each optional: the TelemetryProfiler's sampling thread reads them.

  tegrastats  Jetson board rails (VDD_IN...), temperatures, CPU/GPU/EMC load and clocks
  nvml        NVIDIA GPUs: power, total-energy counter, memory, utilisation, clocks, throttle
              reasons (on Jetson most fields are NotSupported: each is dropped on its own)
  rapl        Linux powercap energy counters (CPU package / DRAM / psys), wrap-around handled
  psutil      CPU utilisation and clock, sensors, the worker's RSS
pynvml and psutil are imported in ``open()``: importing this module stays cheap.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from edgebench.profilers.tegrastats import parse_tegrastats, tegrastats_reading
from edgebench.records import ENERGY_TOTAL


class SourceUnavailable(RuntimeError):
    """A source cannot run here. ``expected``: normal on this kind of machine (not a warning)."""

    def __init__(self, reason: str, expected: bool = False):
        super().__init__(reason)
        self.expected = expected


class Source:
    """One telemetry source. ``read()`` returns None (nothing new) or a dict
    {metric: {label: value}} with metrics power_w, energy_j (a cumulative counter, J), temp_c,
    cpu_pct, cpu_freq_mhz, gpu_freq_mhz, gpu_util_pct, gpu_mem_bytes, rss_bytes, emc_util_pct,
    emc_freq_mhz, throttle ({reason: 1.0}); label "total" marks the source's own total; an
    optional "t_ns" (perf_counter_ns) says when the values were true. read() is called from the
    sampling thread and must not block for long."""

    name: ClassVar[str] = "source"
    scope: ClassVar[str] = "component"  # "board": its total is the whole device
    notes: list[str]

    def open(self) -> None:
        """Start; raise SourceUnavailable when this source cannot work here."""

    def read(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and release (idempotent)."""


class TegrastatsSource(Source):
    name = "tegrastats"
    scope = "board"

    def __init__(self, interval_ms: int = 100, command: Sequence[str] | None = None, first_line_s: float = 3.0):
        self.command = list(command or ["tegrastats", "--interval", str(int(interval_ms))])
        self.first_line_s = first_line_s
        self.notes: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._latest: tuple[int, dict] | None = None
        self._lock = threading.Lock()
        self._got = threading.Event()

    def open(self) -> None:
        if not shutil.which(self.command[0]):
            raise SourceUnavailable(f"{self.command[0]} not found (not a Jetson)", expected=True)
        self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True, bufsize=1)
        threading.Thread(target=self._reader, name="edgebench-tegrastats", daemon=True).start()
        if not self._got.wait(self.first_line_s):
            self.close()
            raise SourceUnavailable(f"tegrastats printed nothing in {self.first_line_s:g} s")

    def _reader(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            parsed = parse_tegrastats(line)
            if parsed["ram_total_mb"] is None and not parsed["power_mw"]:
                continue  # not a tegrastats line
            with self._lock:
                self._latest = (time.perf_counter_ns(), parsed)
            self._got.set()

    def read(self) -> dict[str, Any] | None:
        with self._lock:
            item, self._latest = self._latest, None
        if item is None:
            if self._proc is not None and self._proc.poll() is not None:
                raise SourceUnavailable(f"tegrastats exited with status {self._proc.returncode}")
            return None
        return {"t_ns": item[0], **tegrastats_reading(item[1])}

    def close(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(2)
            except subprocess.TimeoutExpired:
                self._proc.kill()


# NVML clock-event reasons that mean "slower than asked" (idle and app-clock settings do not);
# the bits are pynvml's nvmlClocksThrottleReason* constants.
_NVML_THROTTLE = {0x4: "SwPowerCap", 0x8: "HwSlowdown", 0x20: "SwThermalSlowdown",
                  0x40: "HwThermalSlowdown", 0x80: "HwPowerBrakeSlowdown"}


class NvmlSource(Source):
    name = "nvml"

    def __init__(self, nvml: Any = None):
        self._nv = nvml
        self.notes: list[str] = []
        self._handles: list[Any] = []
        self._dead: set[tuple[int, str]] = set()

    def open(self) -> None:
        if self._nv is None:
            try:
                import pynvml
            except ImportError:
                raise SourceUnavailable("nvidia-ml-py is not installed", expected=True) from None
            self._nv = pynvml
        try:
            self._nv.nvmlInit()
            self._handles = [self._nv.nvmlDeviceGetHandleByIndex(i) for i in range(self._nv.nvmlDeviceGetCount())]
        except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA GPU here
            raise SourceUnavailable(f"NVML unavailable ({e})", expected=True) from None
        if not self._handles:
            raise SourceUnavailable("NVML sees no GPU", expected=True)

    def _get(self, i: int, what: str, fn: Callable[[], Any]) -> Any:
        if (i, what) in self._dead:
            return None
        try:
            return fn()
        except Exception as e:  # NVMLError_NotSupported (Jetson), NoPermission...: drop the field
            self._dead.add((i, what))
            self.notes.append(f"nvml: gpu{i} {what} unavailable ({e})")
            return None

    def read(self) -> dict[str, Any]:
        nv, r = self._nv, {m: {} for m in ("power_w", "energy_j", "gpu_mem_bytes", "gpu_util_pct",
                                           "gpu_freq_mhz", "temp_c", "throttle")}
        for i, h in enumerate(self._handles):
            g = f"gpu{i}"
            for metric, label, what, fn, scale in (
                ("power_w", g, "power", lambda: nv.nvmlDeviceGetPowerUsage(h), 1e-3),
                ("energy_j", g, "energy counter", lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h), 1e-3),
                ("gpu_mem_bytes", g, "memory", lambda: nv.nvmlDeviceGetMemoryInfo(h).used, 1),
                ("gpu_util_pct", g, "utilisation", lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu, 1),
                ("gpu_freq_mhz", g, "SM clock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM), 1),
                ("gpu_freq_mhz", f"{g}:mem", "memory clock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM), 1),
                ("temp_c", g, "temperature", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU), 1),
            ):
                v = self._get(i, what, fn)
                if v is not None:
                    r[metric][label] = float(v) * scale
            reasons_fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                nv.nvmlDeviceGetCurrentClocksThrottleReasons
            mask = self._get(i, "throttle reasons", lambda: reasons_fn(h))
            if mask is not None:
                for bit, why in _NVML_THROTTLE.items():
                    r["throttle"][f"{g}:{why}"] = 1.0 if int(mask) & bit else 0.0
        n = len(self._handles)
        if len(self._dead) >= 8 * n:
            raise SourceUnavailable("no NVML field is supported on this GPU")
        for metric in ("power_w", "energy_j"):
            vals = [v for k, v in r[metric].items()]
            if vals and len(vals) == n:
                r[metric][ENERGY_TOTAL] = sum(vals)
        return {k: v for k, v in r.items() if v}

    def close(self) -> None:
        if self._handles:
            self._handles = []
            try:
                self._nv.nvmlShutdown()
            except Exception:
                pass


class RaplSource(Source):
    name = "rapl"

    def __init__(self, root: str = "/sys/class/powercap"):
        self.root = root
        self.notes: list[str] = []
        self._zones: list[tuple[str, str, int | None]] = []  # (label, dir, max range uJ)
        self._last: dict[str, tuple[int, int]] = {}           # label -> (t_ns, raw uJ)
        self._cum: dict[str, float] = {}

    @staticmethod
    def _read_int(path: str) -> int:
        with open(path) as f:
            return int(f.read().strip())

    def open(self) -> None:
        dirs = sorted(glob.glob(os.path.join(self.root, "intel-rapl:*")))
        if not dirs:
            raise SourceUnavailable(f"no RAPL zones under {self.root}", expected=True)
        names = {}
        for d in dirs:
            zone = os.path.basename(d)
            with open(os.path.join(d, "name")) as f:
                names[zone] = f.read().strip()
            parent = zone.rsplit(":", 1)[0]  # intel-rapl:0:1 -> intel-rapl:0 (listed before it)
            label = f"{names[parent]}/{names[zone]}" if parent in names else names[zone]
            try:
                self._read_int(os.path.join(d, "energy_uj"))
            except PermissionError:
                raise SourceUnavailable("RAPL energy counters are readable by root only (Linux >= 5.10): "
                                        "no CPU package energy") from None
            try:
                rng = self._read_int(os.path.join(d, "max_energy_range_uj"))
            except (OSError, ValueError):
                rng = None
            self._zones.append((label, d, rng))
        labels = [z[0] for z in self._zones]
        # psys covers the whole SoC where it exists; else packages plus DRAM (not inside a package).
        self._total = ["psys"] if "psys" in labels else [
            l for l in labels if (l.startswith("package") and "/" not in l) or l.endswith("dram")]

    def read(self) -> dict[str, Any]:
        now = time.perf_counter_ns()
        energy, power = {}, {}
        for label, d, rng in self._zones:
            raw = self._read_int(os.path.join(d, "energy_uj"))
            if label in self._last:
                t_prev, raw_prev = self._last[label]
                delta = raw - raw_prev
                if delta < 0:  # the counter wrapped (or was reset, with no range known)
                    delta = delta + rng if rng else 0
                self._cum[label] += delta * 1e-6
                if now > t_prev:
                    power[label] = delta * 1e-6 / ((now - t_prev) * 1e-9)
            else:
                self._cum[label] = 0.0
            self._last[label] = (now, raw)
            energy[label] = self._cum[label]
        energy[ENERGY_TOTAL] = sum(energy[l] for l in self._total)
        if power and all(l in power for l in self._total):
            power[ENERGY_TOTAL] = sum(power[l] for l in self._total)
        return {"t_ns": now, "energy_j": energy, **({"power_w": power} if power else {})}


class PsutilSource(Source):
    name = "psutil"

    def __init__(self) -> None:
        self.notes: list[str] = []

    def open(self) -> None:
        import psutil

        self._ps = psutil
        self._proc = psutil.Process()
        psutil.cpu_percent(None)  # the first call only sets the reference point

    def read(self) -> dict[str, Any]:
        ps = self._ps
        r: dict[str, Any] = {"cpu_pct": {"": ps.cpu_percent(None)}, "rss_bytes": {"": float(self._proc.memory_info().rss)}}
        try:
            freq = ps.cpu_freq()
            if freq and freq.current:
                r["cpu_freq_mhz"] = {"avg": float(freq.current)}
        except (OSError, AttributeError, NotImplementedError):
            pass
        temps = {}
        for chip, entries in (getattr(ps, "sensors_temperatures", dict)() or {}).items():
            for i, e in enumerate(entries):
                if e.current is not None and -40.0 < e.current < 150.0:
                    temps[f"{chip}:{e.label or i}"] = float(e.current)
        if temps:
            r["temp_c"] = temps
        return r


SOURCE_CLASSES: dict[str, type[Source]] = {c.name: c for c in (TegrastatsSource, NvmlSource, RaplSource, PsutilSource)}


def make_sources(names: Sequence[str] | None = None, interval_s: float = 0.1) -> list[Source]:
    """Source objects by name (all of them for None; unavailable ones drop out at attach)."""
    out: list[Source] = []
    for n in names or SOURCE_CLASSES:
        if n not in SOURCE_CLASSES:
            raise ValueError(f"unknown telemetry source {n!r}; sources: {', '.join(SOURCE_CLASSES)}")
        out.append(TegrastatsSource(int(interval_s * 1000)) if n == "tegrastats" else SOURCE_CLASSES[n]())
    return out
