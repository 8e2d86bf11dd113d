"""Telemetry: power, energy, temperatures, clocks and utilisation while a case runs.

Passive: a background thread reads every source each ``interval_s`` (default 0.1 s) from
``attach()`` to ``detach()``; ``phase()`` only records its window (two perf_counter_ns calls).
``collect()`` turns what was read into Samples: timelines (t_ns = ns since the profiler was made,
tagged with the (phase, rep) window holding them, ("case", -1) outside windows), and per window
``energy_j`` (labels ``<source>:<rail>`` and ``total``), ``energy_window_ns`` and ``throttle``.

Sources (each optional; one that is missing or fails is dropped with a warning, never an error):
  tegrastats  Jetson board rails (VDD_IN...), temperatures, CPU/GPU/EMC load and clocks
  nvml        NVIDIA GPUs: power, total-energy counter, memory, utilisation, clocks, throttle
              reasons (on Jetson most fields are NotSupported: each is dropped on its own)
  rapl        Linux powercap energy counters (CPU package / DRAM / psys), wrap-around handled
  psutil      CPU utilisation and clock, sensors, the worker's RSS
Energy over a window is a counter's delta where the source has one (RAPL, NVML), else the
trapezoid integral of its power samples (edgebench.energy). ``total`` is the board source's
total (tegrastats: VDD_IN / POM_5V_IN, or the sum of the rails where there is none), else the sum
of the component sources' totals (RAPL + NVML GPUs).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from bisect import bisect_left, bisect_right
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Sequence

from edgebench.energy import TOTAL, counter_delta, integrate_power
from edgebench.profilers.base import Profiler
from edgebench.records import Sample

if TYPE_CHECKING:
    from edgebench.backends.base import Backend

log = logging.getLogger("edgebench.telemetry")

# --- tegrastats -------------------------------------------------------------------------------

_DATE = re.compile(r"^\s*(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: ?\(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?", re.I)
_EMC = re.compile(r"\bEMC(?:_FREQ)? +(?:(\d+)%)?(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D(?:_FREQ)? +(?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z]\w*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_tegrastats(line: str) -> dict[str, Any]:
    """Every field of one tegrastats line (JetPack 3 to 7 formats), unknown fields ignored.

    Keys (absent fields give None / empty): timestamp, ram_used_mb, ram_total_mb, swap_used_mb,
    swap_total_mb, swap_cached_mb, cpu_load_pct (list, None for 'off' cores), cpu_freq_mhz
    (list), gpu_load_pct, gpu_freq_mhz (highest GPC clock), gpu_freq_mhz_gpc (list), emc_load_pct,
    emc_freq_mhz, temps_c {sensor: C} (as printed, -256 = absent sensor), power_mw {rail: mW now},
    power_avg_mw {rail: mW average since tegrastats started}."""
    out: dict[str, Any] = {k: None for k in (
        "timestamp", "ram_used_mb", "ram_total_mb", "swap_used_mb", "swap_total_mb", "swap_cached_mb",
        "gpu_load_pct", "gpu_freq_mhz", "emc_load_pct", "emc_freq_mhz")}
    out.update(cpu_load_pct=[], cpu_freq_mhz=[], gpu_freq_mhz_gpc=[], temps_c={}, power_mw={}, power_avg_mw={})
    if not isinstance(line, str):
        return out
    if m := _DATE.match(line):
        out["timestamp"] = m.group(1)
    if m := _RAM.search(line):
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        out["swap_used_mb"], out["swap_total_mb"] = int(m.group(1)), int(m.group(2))
        out["swap_cached_mb"] = int(m.group(3)) if m.group(3) else None
    if m := _CPU.search(line):
        shared = int(m.group(2)) if m.group(2) else None
        for entry in m.group(1).split(","):
            em = re.fullmatch(r"\s*(\d+)%(?:@(\d+))?\s*", entry)
            out["cpu_load_pct"].append(int(em.group(1)) if em else None)
            out["cpu_freq_mhz"].append(int(em.group(2)) if em and em.group(2) else (shared if em else None))
    if m := _EMC.search(line):
        out["emc_load_pct"] = int(m.group(1)) if m.group(1) else None
        out["emc_freq_mhz"] = int(m.group(2)) if m.group(2) else None
    if m := _GR3D.search(line):
        out["gpu_load_pct"] = int(m.group(1)) if m.group(1) else None
        gpcs = [int(x) for x in (m.group(2) or "").split(",") if x]
        out["gpu_freq_mhz_gpc"] = gpcs
        out["gpu_freq_mhz"] = max(gpcs) if gpcs else None
    for name, value in _TEMP.findall(line):
        out["temps_c"][name] = float(value)
    for name, now, avg in _RAIL.findall(line):
        if name in ("RAM", "SWAP", "IRAM"):
            continue
        out["power_mw"][name], out["power_avg_mw"][name] = int(now), int(avg)
    return out


def tegrastats_reading(p: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A parsed line as a telemetry reading. Drops the placeholder PMIC sensor (always 100 or
    50 C), absent sensors (-256 C) and not-connected 'NC' rails."""
    r: dict[str, dict[str, float]] = {}
    rails = {k: v / 1000.0 for k, v in p["power_mw"].items() if k != "NC"}
    if rails:
        board = next((rails[k] for k in ("VDD_IN", "POM_5V_IN") if k in rails), None)
        r["power_w"] = {**rails, TOTAL: board if board is not None else sum(rails.values())}
    temps = {k: v for k, v in p["temps_c"].items() if v > -40.0 and k.upper() != "PMIC"}
    if temps:
        r["temp_c"] = temps
    loads = [x for x in p["cpu_load_pct"] if x is not None]
    if loads:
        r["cpu_pct"] = {"": sum(loads) / len(loads)}
    freqs = [f for f, x in zip(p["cpu_freq_mhz"], p["cpu_load_pct"]) if f and x is not None]
    if freqs:
        r["cpu_freq_mhz"] = {"avg": sum(freqs) / len(freqs)}
    for key, metric, label in (("gpu_load_pct", "gpu_util_pct", "gr3d"), ("gpu_freq_mhz", "gpu_freq_mhz", "gr3d"),
                               ("emc_load_pct", "emc_util_pct", "emc"), ("emc_freq_mhz", "emc_freq_mhz", "emc")):
        if p.get(key) is not None:
            r[metric] = {label: float(p[key])}
    return r


# --- sources ----------------------------------------------------------------------------------

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
                getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons")
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
                r[metric][TOTAL] = sum(vals)
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
        energy[TOTAL] = sum(energy[l] for l in self._total)
        if power and all(l in power for l in self._total):
            power[TOTAL] = sum(power[l] for l in self._total)
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


# --- the profiler -----------------------------------------------------------------------------

TIMELINE_METRICS = ("power_w", "temp_c", "cpu_pct", "cpu_freq_mhz", "gpu_freq_mhz", "gpu_util_pct",
                    "gpu_mem_bytes", "rss_bytes", "emc_util_pct", "emc_freq_mhz")
MEASURED = ("prefill", "decode")
_Series = tuple[list[int], list[float]]


class TelemetryProfiler(Profiler):
    """See the module docstring. ``sources``: Source objects, source names, or None for every
    source that works here. ``clock_drop``: a GPU clock more than this fraction below the highest
    busy clock seen in the measured windows (GPU load >= 50%) is flagged as ``throttle``.
    After ``attach()``: ``warnings`` (one line each: sources missing, failing or partly
    unsupported) and ``skipped`` ({source: why}, the ones this kind of machine never has)."""

    name: ClassVar[str] = "telemetry"

    def __init__(self, sources: Sequence[Source | str] | None = None, interval_s: float = 0.1,
                 t0_ns: int | None = None, clock_drop: float = 0.15):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s, self.clock_drop = interval_s, clock_drop
        self._auto = sources is None
        names = [s for s in (sources or ()) if isinstance(s, str)]
        self._sources: list[Source] = [s for s in (sources or ()) if not isinstance(s, str)]
        if self._auto or names:
            self._sources += make_sources(names or None, interval_s)
        self._t0 = time.perf_counter_ns() if t0_ns is None else t0_ns
        self.warnings: list[str] = []
        self.skipped: dict[str, str] = {}   # sources that cannot exist here (auto mode), with why
        self._active: list[Source] = []
        self._scopes: dict[str, str] = {}
        self._series: dict[tuple[str, str], _Series] = {}
        self._emitted: dict[tuple[str, str], int] = {}
        self._last_t: dict[str, int] = {}
        self._windows: list[tuple[int, int, str, int]] = []   # (start, end, phase, rep), in order
        self._pending: list[tuple[int, int, str, int]] = []
        self._open_start: int | None = None
        self._idx: dict[tuple, int] = {}
        self._ref_clock: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._detached = False

    def _warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)
            log.warning(msg)

    def _now(self) -> int:
        return time.perf_counter_ns() - self._t0

    # sampling (background thread)
    def attach(self, backend: "Backend | None" = None) -> None:
        for src in self._sources:
            try:
                src.open()
                self._active.append(src)
                self._scopes[src.name] = src.scope
            except Exception as e:
                if self._auto and getattr(e, "expected", False):
                    self.skipped[src.name] = str(e)
                else:
                    self._warn(f"telemetry source {src.name} unavailable: {e}")
        self._sample_once()  # synchronously: the first window starts after a sample exists
        self._thread = threading.Thread(target=self._run, name="edgebench-telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_once()

    def _sample_once(self) -> None:
        for src in list(self._active):
            t_before = time.perf_counter_ns()
            try:
                reading = src.read()
            except Exception as e:
                self._warn(f"telemetry source {src.name} failed and was dropped: {e}")
                self._active.remove(src)
                src.close()
                continue
            for note in getattr(src, "notes", ())[:]:
                self._warn(note)
            getattr(src, "notes", []).clear()
            if reading:
                t_abs = reading.pop("t_ns", None) or (t_before + time.perf_counter_ns()) // 2
                self._ingest(src.name, t_abs - self._t0, reading)

    def _ingest(self, src: str, t: int, reading: dict[str, Any]) -> None:
        with self._lock:
            for metric, values in reading.items():
                if not isinstance(values, dict):
                    values = {"": values}
                kind = {"energy_j": "_counter", "throttle": "_throttle"}.get(metric, metric)
                if kind not in TIMELINE_METRICS and not kind.startswith("_"):
                    continue
                for label, v in values.items():
                    if v is None:
                        continue
                    ts, vs = self._series.setdefault((kind, f"{src}:{label}" if label else src), ([], []))
                    if ts and t <= ts[-1]:
                        continue  # the same reading again (e.g. no new tegrastats line)
                    ts.append(t)
                    vs.append(float(v))
            for label, mhz in (reading.get("gpu_freq_mhz") or {}).items():
                util = (reading.get("gpu_util_pct") or {}).get(label)
                if util is not None and util >= 50:
                    ts, vs = self._series.setdefault(("_busyclk", f"{src}:{label}"), ([], []))
                    ts.append(t)
                    vs.append(float(mhz))
            self._last_t[src] = max(t, self._last_t.get(src, t))

    def detach(self, backend: "Backend | None" = None) -> None:
        # Let every source report past the end of the last window (tegrastats lags by <= 1 interval).
        deadline = time.monotonic() + max(1.0, 3 * self.interval_s)
        end = self._windows[-1][1] if self._windows else 0
        while self._thread and time.monotonic() < deadline and any(
                self._last_t.get(s.name, -1) < end for s in self._active):
            time.sleep(self.interval_s / 4)
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample_once()
        for src in self._active:
            src.close()
        self._detached = True

    @contextmanager
    def phase(self, phase: str, rep: int) -> Iterator[None]:
        start = self._now()
        self._open_start = start
        try:
            yield
        finally:
            w = (start, self._now(), phase, rep)
            self._windows.append(w)
            self._pending.append(w)
            self._open_start = None

    @property
    def windows(self) -> list[tuple[str, int, int, int]]:
        """The phase windows so far: (phase, rep, start_ns, end_ns), ns since the profiler was made."""
        return [(p, r, s, e) for s, e, p, r in self._windows]

    # turning readings into samples
    def _tag(self, t: int) -> tuple[str, int]:
        i = bisect_right(self._windows, (t, float("inf"))) - 1
        if i >= 0 and self._windows[i][0] <= t <= self._windows[i][1]:
            return self._windows[i][2], self._windows[i][3]
        return "case", -1

    def _sample(self, rep: int, phase: str, metric: str, value: float, label: str, t_ns: int | None = None) -> Sample:
        key = (rep, phase, metric, label)
        i = self._idx.get(key, 0)
        self._idx[key] = i + 1
        return Sample(rep, phase, metric, value, idx=i, label=label, t_ns=t_ns)

    def _window_samples(self, start: int, end: int, phase: str, rep: int) -> list[Sample]:
        out, energy = [], {}
        for (kind, label), (ts, vs) in self._series.items():
            covered = ts and ts[0] <= start and ts[-1] >= end
            if kind == "_counter" and covered:
                energy[label] = counter_delta(ts, vs, start, end)
            elif kind == "power_w" and covered and ("_counter", label) not in self._series:
                energy[label] = integrate_power(ts, vs, start, end)
            elif kind == "_throttle" and ts:
                lo, hi = max(bisect_left(ts, start) - 1, 0), bisect_right(ts, end)
                if any(v > 0 for v in vs[lo:hi]):
                    out.append(self._sample(rep, phase, "throttle", 1.0, label))
            elif kind == "_busyclk" and phase in MEASURED:
                inside = vs[bisect_left(ts, start):bisect_right(ts, end)]
                if inside:
                    ref = self._ref_clock[label] = max(self._ref_clock.get(label, 0.0), max(inside))
                    if min(inside) < (1.0 - self.clock_drop) * ref:
                        out.append(self._sample(rep, phase, "throttle", 1.0, f"clock_drop:{label}"))
        # The device total: the board source's own total, else the sum of every component
        # source's total (a source without one, like psutil, measures no power).
        board = [n for n, scope in self._scopes.items() if scope == "board"]
        totals = [f"{board[0]}:{TOTAL}"] if board else sorted({
            lbl for (kind, lbl) in self._series if kind in ("power_w", "_counter") and lbl.endswith(":" + TOTAL)})
        if totals and all(energy.get(t) is not None for t in totals):
            energy[TOTAL] = sum(energy[t] for t in totals)
        for label, joules in sorted(energy.items()):
            if joules is not None:
                out.append(self._sample(rep, phase, "energy_j", joules, label))
        if energy:
            out.append(self._sample(rep, phase, "energy_window_ns", float(end - start), ""))
        return out

    def collect(self) -> list[Sample]:
        out: list[Sample] = []
        with self._lock:
            cutoff = self._open_start
            for key, (ts, vs) in self._series.items():
                if key[0] not in TIMELINE_METRICS:
                    continue
                i = self._emitted.get(key, 0)
                while i < len(ts) and (cutoff is None or ts[i] < cutoff):
                    phase, rep = self._tag(ts[i])
                    out.append(self._sample(rep, phase, key[0], vs[i], key[1], t_ns=ts[i]))
                    i += 1
                self._emitted[key] = i
            done = [w for w in self._pending if self._detached or all(
                self._last_t.get(s.name, -1) >= w[1] for s in self._active)]
            for w in done:
                out.extend(self._window_samples(*w))
            self._pending = [w for w in self._pending if w not in done]
            self._prune(cutoff)
        return out

    def _prune(self, cutoff: int | None) -> None:
        """Forget readings no pending window or unsent timeline needs (keeps one before)."""
        keep = [w[0] for w in self._pending] + ([cutoff] if cutoff is not None else [])
        horizon = min(keep) if keep else max(self._last_t.values(), default=0)
        for key, (ts, vs) in self._series.items():
            drop = max(bisect_left(ts, horizon) - 1, 0)
            if key[0] in TIMELINE_METRICS:
                drop = min(drop, self._emitted.get(key, 0))
            if drop:
                del ts[:drop], vs[:drop]
                if key in self._emitted:
                    self._emitted[key] -= drop


# --- cooldown ---------------------------------------------------------------------------------

def max_temperature() -> float | None:
    """Hottest plausible sensor now (thermal zones, else psutil), in C; None when none is readable."""
    temps = []
    for path in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
        try:
            with open(path) as f:
                v = int(f.read().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if -40.0 < v < 150.0:  # Jetson reports absent sensors as -256 C
            temps.append(v)
    if not temps:
        try:
            import psutil

            for entries in (psutil.sensors_temperatures() or {}).values():
                temps += [e.current for e in entries if e.current is not None and -40.0 < e.current < 150.0]
        except (AttributeError, OSError):
            pass
    return max(temps) if temps else None


def wait_cooldown(seconds: float = 0, temp_c: float | None = None, timeout_s: float = 600,
                  read_temp: Callable[[], float | None] | None = None, poll_s: float = 1.0) -> float:
    """Block for ``seconds``, then until the hottest sensor reads below ``temp_c`` (or ``timeout_s``
    more seconds passed, or no temperature can be read). Returns the seconds waited."""
    t0 = time.monotonic()
    if seconds > 0:
        time.sleep(seconds)
    if temp_c is not None:
        read = read_temp or max_temperature
        deadline = time.monotonic() + timeout_s
        while True:
            t = read()
            if t is None:
                log.warning("cooldown: no temperature sensor readable; not waiting for %.0f C", temp_c)
                break
            left = deadline - time.monotonic()
            if t < temp_c or left <= 0:
                break
            time.sleep(min(poll_s, left))
    return time.monotonic() - t0
