"""Telemetry: power, energy, temperatures, clocks and utilisation while a case runs.

Passive: a background thread reads every source each ``interval_s`` (default 0.1 s) from
``attach()`` to ``detach()``; ``phase()`` only records its window (two perf_counter_ns calls).
``collect()`` turns what was read into Samples: timelines (t_ns = ns since the profiler was made,
tagged with the (phase, rep) window holding them, ("case", -1) outside windows), and per window
``energy_j`` (labels ``<source>:<rail>`` and ``total``), ``energy_window_ns`` and ``throttle``.

Sources (tegrastats, nvml, rapl, psutil: edgebench.profilers.telemetry_sources) are each
optional; one that is missing or fails is dropped with a warning, never an error.
Energy over a window is a counter's delta where the source has one (RAPL, NVML), else the
trapezoid integral of its power samples (edgebench.energy). ``total`` is the board source's
total (tegrastats: VDD_IN / POM_5V_IN, or the sum of the rails where there is none), else the sum
of the component sources' totals (RAPL + NVML GPUs).
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from edgebench.profilers.base import Profiler
from edgebench.profilers.integrate import counter_delta, integrate_power

# The parser and the sources were first defined in this module; their names stay importable from
# here (edgebench.profilers.telemetry.parse_tegrastats is public): hence the F401s.
from edgebench.profilers.tegrastats import parse_tegrastats, tegrastats_reading  # noqa: F401
from edgebench.profilers.telemetry_sources import (  # noqa: F401
    SOURCE_CLASSES,
    NvmlSource,
    PsutilSource,
    RaplSource,
    Source,
    SourceUnavailable,
    TegrastatsSource,
    make_sources,
)
from edgebench.records import ENERGY_TOTAL, Sample

if TYPE_CHECKING:
    from edgebench.backends.base import Backend

log = logging.getLogger("edgebench.telemetry")

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
    def attach(self, backend: Backend | None = None) -> None:
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

    def detach(self, backend: Backend | None = None) -> None:
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
        totals = [f"{board[0]}:{ENERGY_TOTAL}"] if board else sorted({
            lbl for (kind, lbl) in self._series if kind in ("power_w", "_counter") and lbl.endswith(":" + ENERGY_TOTAL)})
        if totals and all(energy.get(t) is not None for t in totals):
            energy[ENERGY_TOTAL] = sum(energy[t] for t in totals)
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
