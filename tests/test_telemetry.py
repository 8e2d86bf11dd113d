"""Telemetry: the tegrastats parser on real recorded lines, the profiler on fake sources with an
analytic power trace, the real psutil source, RAPL / NVML / tegrastats sources on fakes, energy
summaries and the cooldown helper. No timing assertions beyond "something was sampled"."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from edgebench.analysis.energy import summarize_energy
from edgebench.profilers.integrate import counter_delta, integrate_power
from edgebench.profilers.telemetry import (
    NvmlSource,
    PsutilSource,
    RaplSource,
    Source,
    SourceUnavailable,
    TegrastatsSource,
    TelemetryProfiler,
    parse_tegrastats,
    tegrastats_reading,
    wait_cooldown,
)
from edgebench.records import METRICS

DATA = Path(__file__).parent / "data" / "tegrastats"


def recorded(name: str) -> list[str]:
    return [l.rstrip("\n") for l in (DATA / name).read_text().splitlines() if l.strip() and not l.startswith("#")]


# --- parse_tegrastats on real lines -----------------------------------------------------------

def test_orin_nx_16gb_line():
    p = parse_tegrastats(recorded("orin-nx-16gb.txt")[0])
    assert (p["ram_used_mb"], p["ram_total_mb"]) == (6334, 15388)
    assert (p["swap_used_mb"], p["swap_total_mb"], p["swap_cached_mb"]) == (491, 7694, 0)
    assert p["cpu_load_pct"] == [6, 9, 5, 16, None, None, None, None]
    assert p["cpu_freq_mhz"] == [729, 729, 729, 729, None, None, None, None]
    assert (p["emc_load_pct"], p["emc_freq_mhz"]) == (0, 2133)
    assert (p["gpu_load_pct"], p["gpu_freq_mhz"]) == (0, 611)
    assert p["temps_c"]["tj"] == 48.875 and p["temps_c"]["CV2"] == 45.75 and len(p["temps_c"]) == 9
    assert p["power_mw"] == {"VDD_IN": 5299, "VDD_CPU_GPU_CV": 773, "VDD_SOC": 1424}
    assert p["power_avg_mw"]["VDD_SOC"] == 1424
    assert p["timestamp"] is None


def test_orin_nano_super_lines():
    idle, busy = (parse_tegrastats(l) for l in recorded("orin-nano-super-jp62.txt"))
    assert idle["timestamp"] == "10-08-2026 04:38:21"
    assert (idle["emc_load_pct"], idle["emc_freq_mhz"]) == (15, 204)
    assert idle["gpu_freq_mhz_gpc"] == [305]
    assert busy["power_mw"]["VDD_IN"] == 16321 and busy["power_avg_mw"]["VDD_IN"] == 11204
    assert busy["power_mw"]["VDD_CPU_GPU_CV"] == 7104
    assert (busy["gpu_load_pct"], busy["gpu_freq_mhz"]) == (99, 612)
    assert (busy["emc_load_pct"], busy["emc_freq_mhz"]) == (61, 2133)
    assert busy["cpu_load_pct"] == [38, 2, 1, 0, 1, 0] and busy["cpu_freq_mhz"][0] == 1497
    assert busy["temps_c"]["gpu"] == 58.625 and busy["temps_c"]["tj"] == 58.312
    assert (busy["ram_used_mb"], busy["ram_total_mb"], busy["swap_cached_mb"]) == (6712, 7620, 8)


def test_agx_orin_lines():
    lines = [parse_tegrastats(l) for l in recorded("agx-orin.txt")]
    a, b, c, d = lines
    assert a["gpu_freq_mhz_gpc"] == [0, 0] and a["gpu_load_pct"] == 0
    assert len(a["cpu_load_pct"]) == 12 and a["cpu_freq_mhz"][:2] == [2188, 2112]
    assert a["power_mw"] == {"VDD_GPU_SOC": 2412, "VDD_CPU_CV": 1607, "VIN_SYS_5V0": 4707}
    assert b["temps_c"]["CV0"] == -256.0 and b["temps_c"]["tj"] == 44.343
    assert b["power_mw"]["VDDQ_VDD2_1V8AO"] == 301 and b["power_mw"]["NC"] == 0
    assert c["gpu_freq_mhz_gpc"] == [305, 305] and c["gpu_freq_mhz"] == 305
    assert (c["ram_used_mb"], c["ram_total_mb"]) == (29114, 30697)
    assert c["cpu_load_pct"][5] == 100 and c["temps_c"]["gpu"] == 47.812
    assert d["emc_load_pct"] is None and d["emc_freq_mhz"] is None  # no EMC_FREQ field
    assert d["gpu_load_pct"] == 0 and d["gpu_freq_mhz"] is None     # 'GR3D_FREQ 0%'


def test_jetpack4_lines_without_units():
    nano = [parse_tegrastats(l) for l in recorded("jetson-nano-jp4.txt")]
    assert nano[0]["power_mw"] == {"POM_5V_IN": 1022, "POM_5V_GPU": 0, "POM_5V_CPU": 204}
    assert nano[1]["power_avg_mw"]["POM_5V_IN"] == 1628 and nano[1]["emc_freq_mhz"] == 1600
    assert nano[0]["gpu_freq_mhz"] == 76 and nano[0]["temps_c"]["PMIC"] == 100.0
    tx2, tx1, tx2b = (parse_tegrastats(l) for l in recorded("tx2-jp4.txt"))
    assert tx2["cpu_load_pct"] == [1, None, None, 1, 0, 2]
    assert tx2["power_mw"]["VDD_IN"] == 3056 and tx2["power_mw"]["VDD_SYS_DDR"] == 883
    assert tx1["swap_total_mb"] is None and tx1["power_avg_mw"]["VDD_CPU"] == 178
    assert tx2b["emc_freq_mhz"] is None and tx2b["gpu_freq_mhz"] is None and tx2b["emc_load_pct"] == 0
    nx4, nx5, nx = (parse_tegrastats(l) for l in recorded("xavier-nx.txt"))
    assert nx4["power_mw"]["VDD_IN"] == 6140 and nx4["power_avg_mw"]["VDD_IN"] == 5510
    assert nx4["cpu_load_pct"][5] == 96 and nx4["gpu_freq_mhz"] == 1109
    assert nx5["timestamp"] == "07-09-2024 13:31:31" and nx5["gpu_freq_mhz_gpc"] == [114]
    assert nx5["cpu_freq_mhz"] == [1397, 1192, 1190, 1190, 1190, 1190]
    assert nx["gpu_load_pct"] == 62 and nx["temps_c"]["thermal"] == 42.55


def test_old_l4t28_and_thor_formats():
    tx1 = parse_tegrastats(recorded("tx1-l4t28.txt")[1])
    assert tx1["cpu_load_pct"] == [17, 11, 65, 0] and tx1["cpu_freq_mhz"] == [1734] * 4  # shared clock
    assert (tx1["emc_load_pct"], tx1["emc_freq_mhz"]) == (1, 1600)
    assert (tx1["gpu_load_pct"], tx1["gpu_freq_mhz"]) == (39, 76)
    assert tx1["power_mw"] == {} and tx1["swap_cached_mb"] == 281
    thor = parse_tegrastats(recorded("thor-jp7.txt")[0])
    assert thor["gpu_load_pct"] is None and thor["gpu_freq_mhz_gpc"] == [0, 0, 0]
    assert (thor["emc_load_pct"], thor["emc_freq_mhz"]) == (0, 665)
    assert thor["power_mw"]["VDD_CPU_SOC_MSS"] == 4923 and thor["power_avg_mw"]["VDD_CPU_SOC_MSS"] == 4544
    assert len(thor["cpu_load_pct"]) == 14 and thor["cpu_freq_mhz"][8] == 2601


def test_reading_picks_the_board_rail_and_drops_placeholders():
    busy = tegrastats_reading(parse_tegrastats(recorded("orin-nano-super-jp62.txt")[1]))
    assert busy["power_w"]["total"] == pytest.approx(16.321)
    assert busy["gpu_util_pct"] == {"gr3d": 99.0} and busy["emc_freq_mhz"] == {"emc": 2133.0}
    nano = tegrastats_reading(parse_tegrastats(recorded("jetson-nano-jp4.txt")[0]))
    assert nano["power_w"]["total"] == pytest.approx(1.022) and "PMIC" not in nano["temp_c"]
    agx = tegrastats_reading(parse_tegrastats(recorded("agx-orin.txt")[1]))
    assert "CV0" not in agx["temp_c"] and "NC" not in agx["power_w"]
    assert agx["power_w"]["total"] == pytest.approx(2.340 + 0.390 + 4.025 + 0.301)  # no VDD_IN: sum
    assert agx["cpu_freq_mhz"] == {"avg": 729.0}


@pytest.mark.parametrize("junk", ["", "hello world", "RAM x/yMB CPU [abc,@,%] GR3D_FREQ @[,]", "\x00\xff",
                                  "VDD_IN 12/ EMC_FREQ % tj@C", "CPU [" * 50, None, 42])
def test_garbage_never_raises(junk):
    p = parse_tegrastats(junk)
    assert isinstance(p, dict) and p["power_mw"] == {} or junk and "VDD" in str(junk)
    tegrastats_reading(p)


# --- the profiler on fake sources -------------------------------------------------------------

class LinearPower(Source):
    """P(t) = a + b*t W, t in s since base_ns; also an energy counter E(t) = c*t + d*t^2 J."""
    name = "fake"

    def __init__(self, base_ns: int, a=10.0, b=20.0, c=None, d=0.0, name="fake", fail_after=None):
        self.base, self.a, self.b, self.c, self.d = base_ns, a, b, c, d
        self.name, self.fail_after, self.calls, self.notes = name, fail_after, 0, []

    def read(self):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("sensor went away")
        now = time.perf_counter_ns()
        t = (now - self.base) * 1e-9
        r = {"t_ns": now, "power_w": {"rail": self.a + self.b * t, "total": self.a + self.b * t},
             "temp_c": {"soc": 40.0 + t}}
        if self.c is not None:
            r["energy_j"] = {"ctr": self.c * t + self.d * t * t}
        return r


def run_windows(prof, phases=(("prefill", 0, 0.05), ("decode", 0, 0.08), ("prefill", 1, 0.03), ("decode", 1, 0.06))):
    prof.attach(None)
    time.sleep(0.03)
    for phase, rep, seconds in phases:
        with prof.phase(phase, rep):
            time.sleep(seconds)
        time.sleep(0.02)
    prof.detach(None)
    return prof.collect()


def test_energy_matches_the_analytic_integral():
    base = time.perf_counter_ns()
    src = LinearPower(base, a=10.0, b=20.0, c=3.0)  # counter linear in t: interpolation is exact
    prof = TelemetryProfiler(sources=[src], interval_s=0.01, t0_ns=base)
    samples = run_windows(prof)
    assert not prof.warnings
    energy = {(s.phase, s.rep, s.label): s.value for s in samples if s.metric == "energy_j"}
    windows = {(s.phase, s.rep): s.value for s in samples if s.metric == "energy_window_ns"}
    assert len(prof.windows) == 4 and len(windows) == 4
    for phase, rep, start, end in prof.windows:
        s0, s1 = start * 1e-9, end * 1e-9
        exact = 10.0 * (s1 - s0) + 10.0 * (s1 ** 2 - s0 ** 2)           # integral of 10 + 20 t
        assert energy[(phase, rep, "fake:rail")] == pytest.approx(exact, rel=1e-6)
        assert energy[(phase, rep, "total")] == pytest.approx(exact, rel=1e-6)
        counter = 3.0 * (s1 - s0)                                        # the counter's delta
        assert energy[(phase, rep, "fake:ctr")] == pytest.approx(counter, rel=1e-6)
        assert windows[(phase, rep)] == end - start


def test_total_sums_components_unless_a_board_source_covers_everything():
    base = time.perf_counter_ns()

    def totals(sources):
        prof = TelemetryProfiler(sources=sources, interval_s=0.01, t0_ns=base)
        samples = run_windows(prof, phases=(("decode", 0, 0.05),))
        w = next(s.value for s in samples if s.metric == "energy_window_ns") * 1e-9
        return next(s.value for s in samples if s.metric == "energy_j" and s.label == "total") / w

    cpu, gpu = LinearPower(base, a=5.0, b=0.0, name="cpu"), LinearPower(base, a=7.0, b=0.0, name="gpu")
    assert totals([cpu, gpu]) == pytest.approx(12.0)

    class Board(LinearPower):
        scope = "board"

    board = Board(base, a=20.0, b=0.0, name="board")
    assert totals([LinearPower(base, a=7.0, b=0.0, name="gpu"), board]) == pytest.approx(20.0)


def test_timeline_samples_are_tagged_with_their_window():
    base = time.perf_counter_ns()
    prof = TelemetryProfiler(sources=[LinearPower(base)], interval_s=0.005, t0_ns=base)
    samples = run_windows(prof)
    timeline = [s for s in samples if s.metric == "power_w"]
    assert {s.label for s in timeline} == {"fake:rail", "fake:total"}
    tags = {(s.phase, s.rep) for s in timeline}
    assert ("case", -1) in tags and ("decode", 0) in tags and ("prefill", 1) in tags
    for s in timeline:
        inside = [(p, r) for p, r, a, b in prof.windows if a <= s.t_ns <= b]
        assert (s.phase, s.rep) == (inside[0] if inside else ("case", -1))
    # idx orders the values within (rep, phase, metric, label)
    dec = sorted((s.idx, s.t_ns) for s in timeline if (s.phase, s.rep, s.label) == ("decode", 0, "fake:rail"))
    assert [i for i, _ in dec] == list(range(len(dec))) and dec == sorted(dec, key=lambda x: x[1])
    assert all(s.metric in METRICS for s in samples)
    assert max(s.value for s in samples if s.metric == "temp_c") > 40.0


def test_collect_drains_and_streams_across_reps():
    base = time.perf_counter_ns()
    prof = TelemetryProfiler(sources=[LinearPower(base)], interval_s=0.005, t0_ns=base)
    prof.attach(None)
    with prof.phase("decode", 0):
        time.sleep(0.03)
    time.sleep(0.03)  # the sampler passes the window's end
    first = prof.collect()
    assert any(s.metric == "energy_j" and s.rep == 0 for s in first)
    with prof.phase("decode", 1):
        time.sleep(0.03)
    prof.detach(None)
    second = prof.collect()
    assert not any(s.metric == "energy_j" and s.rep == 0 for s in second)
    assert any(s.metric == "energy_j" and s.rep == 1 and s.label == "total" for s in second)
    assert prof.collect() == []


def test_a_failing_source_is_dropped_and_the_others_go_on():
    base = time.perf_counter_ns()
    bad = LinearPower(base, name="flaky", fail_after=2)

    class NoOpen(Source):
        name = "noopen"

        def open(self):
            raise SourceUnavailable("no such device")

    prof = TelemetryProfiler(sources=[bad, NoOpen(), LinearPower(base, name="good")], interval_s=0.005, t0_ns=base)
    samples = run_windows(prof)
    assert any("flaky" in w and "sensor went away" in w for w in prof.warnings)
    assert any("noopen" in w for w in prof.warnings)
    good = [s for s in samples if s.metric == "energy_j" and s.label == "good:rail"]
    assert len(good) == 4
    assert not any(s.label.startswith("flaky") and s.metric == "energy_j" for s in samples)


def test_throttle_reasons_and_clock_drops():
    class Gpu(Source):
        name = "gpu"

        def __init__(self):
            self.notes, self.mhz, self.hot = [], 1000.0, 0.0

        def read(self):
            return {"gpu_freq_mhz": {"g": self.mhz}, "gpu_util_pct": {"g": 99.0},
                    "throttle": {"g:HwThermalSlowdown": self.hot}}

    gpu = Gpu()
    prof = TelemetryProfiler(sources=[gpu], interval_s=0.005)
    prof.attach(None)
    with prof.phase("decode", 0):
        time.sleep(0.04)
    gpu.mhz, gpu.hot = 600.0, 1.0
    time.sleep(0.02)
    with prof.phase("decode", 1):
        time.sleep(0.04)
    prof.detach(None)
    flags = {(s.rep, s.label) for s in prof.collect() if s.metric == "throttle"}
    assert (1, "gpu:g:HwThermalSlowdown") in flags and (1, "clock_drop:gpu:g") in flags
    assert not any(rep == 0 for rep, _ in flags)


def test_psutil_runs_for_real():
    prof = TelemetryProfiler(sources=["psutil"], interval_s=0.05)
    prof.attach(None)
    with prof.phase("decode", 0):
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            sum(i * i for i in range(1000))
    prof.detach(None)
    samples = prof.collect()
    decode = [s for s in samples if s.phase == "decode"]
    assert any(s.metric == "cpu_pct" and s.label == "psutil" for s in decode)
    rss = [s.value for s in decode if s.metric == "rss_bytes"]
    assert rss and all(v > 1e6 for v in rss)
    assert not prof.warnings


def test_default_profiler_skips_what_this_machine_lacks():
    prof = TelemetryProfiler(interval_s=0.05)
    prof.attach(None)
    prof.detach(None)
    assert "psutil" not in prof.skipped
    assert any(s.metric == "cpu_pct" for s in prof.collect())


# --- RAPL, NVML and tegrastats sources on fakes ------------------------------------------------

def make_powercap(root: Path, zones: dict[str, tuple[str, int, int]]) -> None:
    for zone, (name, uj, max_uj) in zones.items():
        d = root / zone
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")


def test_rapl_counters_unwrap_and_total_packages(tmp_path):
    make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 999_000_000, 1_000_000_000),
                             "intel-rapl:0:0": ("core", 10, 1_000_000_000),
                             "intel-rapl:1": ("package-1", 5_000_000, 1_000_000_000)})
    src = RaplSource(str(tmp_path))
    src.open()
    first = src.read()
    assert first["energy_j"] == {"package-0": 0.0, "package-0/core": 0.0, "package-1": 0.0, "total": 0.0}
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("2000000\n")     # wrapped past 1e9 uJ
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("6500000\n")
    second = src.read()
    assert second["energy_j"]["package-0"] == pytest.approx(3.0)          # (1e9 - 999e6 + 2e6) uJ
    assert second["energy_j"]["package-1"] == pytest.approx(1.5)
    assert second["energy_j"]["total"] == pytest.approx(4.5)              # packages, not the core subzone
    assert second["power_w"]["total"] > 0


def test_rapl_without_permission_is_a_warning_not_a_failure(tmp_path, monkeypatch):
    make_powercap(tmp_path, {"intel-rapl:0": ("package-0", 1, 10)})

    def denied(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(RaplSource, "_read_int", staticmethod(denied))
    prof = TelemetryProfiler(sources=[RaplSource(str(tmp_path))], interval_s=0.01)
    prof.attach(None)
    prof.detach(None)
    assert prof.collect() == [] and any("root" in w for w in prof.warnings)
    with pytest.raises(SourceUnavailable):
        RaplSource(str(tmp_path / "none")).open()


class FakeNvml:
    """The pynvml calls NvmlSource makes; utilisation and throttle reasons are NotSupported."""
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self):
        self.mj, self.t0 = 0, time.perf_counter_ns()

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetCount(self): return 1
    def nvmlDeviceGetHandleByIndex(self, i): return "h0"
    def nvmlDeviceGetPowerUsage(self, h): return 50_000                       # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):                         # mJ, 50 W
        return int((time.perf_counter_ns() - self.t0) * 50e-6)

    def nvmlDeviceGetMemoryInfo(self, h): return type("M", (), {"used": 123 * 2**20})()
    def nvmlDeviceGetUtilizationRates(self, h): raise self.NVMLError("Not Supported")
    def nvmlDeviceGetClockInfo(self, h, which): return 1400 if which == 1 else 7000
    def nvmlDeviceGetTemperature(self, h, which): return 61
    def nvmlDeviceGetCurrentClocksEventReasons(self, h): raise self.NVMLError("Not Supported")


def test_nvml_fields_fail_one_by_one():
    prof = TelemetryProfiler(sources=[NvmlSource(FakeNvml())], interval_s=0.01)
    samples = run_windows(prof, phases=(("decode", 0, 0.1),))
    assert sum("Not Supported" in w for w in prof.warnings) == 2              # utilisation, reasons
    labels = {(s.metric, s.label) for s in samples}
    assert ("gpu_mem_bytes", "nvml:gpu0") in labels and ("gpu_freq_mhz", "nvml:gpu0:mem") in labels
    assert ("temp_c", "nvml:gpu0") in labels and not any(m == "gpu_util_pct" for m, _ in labels)
    total = [s.value for s in samples if s.metric == "energy_j" and s.label == "total"]
    window = [s.value for s in samples if s.metric == "energy_window_ns"]
    assert total and total[0] == pytest.approx(50.0 * window[0] * 1e-9, rel=0.05, abs=0.002)  # from the counter


def test_tegrastats_source_reads_a_subprocess():
    lines = recorded("orin-nano-super-jp62.txt")
    script = textwrap.dedent(f"""
        import sys, time
        for line in {lines!r} * 50:
            print(line, flush=True)
            time.sleep(0.01)
    """)
    src = TegrastatsSource(command=[sys.executable, "-c", script])
    prof = TelemetryProfiler(sources=[src], interval_s=0.01)
    samples = run_windows(prof, phases=(("decode", 0, 0.1),))
    assert not prof.warnings
    labels = {s.label for s in samples if s.metric == "power_w"}
    assert {"tegrastats:VDD_IN", "tegrastats:total"} <= labels
    assert {s.value for s in samples if s.metric == "gpu_util_pct"} <= {0.0, 99.0}
    e = [s.value for s in samples if s.metric == "energy_j" and s.label == "total"]
    w = [s.value for s in samples if s.metric == "energy_window_ns"]
    assert e and 5.251 * w[0] * 1e-9 * 0.99 <= e[0] <= 16.321 * w[0] * 1e-9 * 1.01
    assert src._proc.poll() is not None  # closed on detach


def test_missing_tegrastats_is_expected_off_jetson():
    with pytest.raises(SourceUnavailable) as e:
        TegrastatsSource(command=["surely-not-tegrastats-here"]).open()
    assert e.value.expected


def test_psutil_source_reading():
    src = PsutilSource()
    src.open()
    r = src.read()
    assert set(r) >= {"cpu_pct", "rss_bytes"}


# --- energy arithmetic and summaries -----------------------------------------------------------

def test_integrals_interpolate_at_the_window_edges():
    ts, w = [0, 1_000_000_000, 2_000_000_000], [0.0, 10.0, 20.0]                # P = 10 t
    assert integrate_power(ts, w, 500_000_000, 1_500_000_000) == pytest.approx(10.0)
    assert integrate_power(ts, w, 0, 2_000_000_000) == pytest.approx(20.0)
    assert integrate_power([], [], 0, 1) is None
    assert counter_delta(ts, [0.0, 5.0, 20.0], 500_000_000, 1_500_000_000) == pytest.approx(10.0)


def test_summarize_energy_on_a_small_frame():
    rows = []
    for rep, (ep, ed) in enumerate([(2.0, 6.0), (4.0, 8.0)]):
        rows += [
            dict(rep=rep, phase="prefill", metric="energy_j", value=ep, idx=0, label="total", t_ns=None),
            dict(rep=rep, phase="prefill", metric="energy_j", value=99.0, idx=0, label="tegrastats:VDD_SOC", t_ns=None),
            dict(rep=rep, phase="prefill", metric="energy_window_ns", value=0.5e9, idx=0, label="", t_ns=None),
            dict(rep=rep, phase="decode", metric="energy_j", value=ed, idx=0, label="total", t_ns=None),
            dict(rep=rep, phase="decode", metric="energy_window_ns", value=1e9, idx=0, label="", t_ns=None),
            dict(rep=rep, phase="decode", metric="temp_c", value=50.0 + rep, idx=0, label="t:tj", t_ns=1),
        ]
    rows.append(dict(rep=-1, phase="case", metric="temp_c", value=70.0, idx=0, label="t:tj", t_ns=2))
    rows.append(dict(rep=1, phase="load", metric="throttle", value=1.0, idx=0, label="x", t_ns=None))
    out = summarize_energy(pd.DataFrame(rows), n_prompt=100, n_gen=20)
    assert out["energy_j_prefill"] == pytest.approx(3.0) and out["energy_j_decode"] == pytest.approx(7.0)
    assert out["avg_power_w_prefill"] == pytest.approx(6.0 / 1.0)
    assert out["avg_power_w_decode"] == pytest.approx(14.0 / 2.0)
    assert out["j_per_token_prefill"] == pytest.approx(0.03) and out["j_per_token_decode"] == pytest.approx(0.35)
    assert out["temp_max_c"] == 70.0
    assert out["throttled"] is False  # a flag outside prefill/decode does not count
    rows.append(dict(rep=0, phase="decode", metric="throttle", value=1.0, idx=0, label="x", t_ns=None))
    assert summarize_energy(pd.DataFrame(rows), 100, 20)["throttled"] is True


def test_summarize_energy_without_telemetry():
    timing = pd.DataFrame([dict(rep=0, phase="prefill", metric="prefill_ns", value=1e6, idx=0, label="", t_ns=None)])
    for frame in (pd.DataFrame(), timing):
        out = summarize_energy(frame, 10, 10)
        assert set(out.values()) == {None}
        assert "j_per_token_decode" in out


def test_throttled_is_unknown_without_a_source_that_could_see_it():
    psutil_only = pd.DataFrame([dict(rep=0, phase="decode", metric="cpu_pct", value=50.0, idx=0, label="psutil", t_ns=1)])
    assert summarize_energy(psutil_only, 10, 10)["throttled"] is None
    with_gpu = pd.concat([psutil_only, pd.DataFrame([dict(rep=0, phase="decode", metric="gpu_freq_mhz", value=612.0,
                                                          idx=0, label="tegrastats:gr3d", t_ns=1)])])
    assert summarize_energy(with_gpu, 10, 10)["throttled"] is False


def test_summarize_energy_falls_back_to_the_timed_phase():
    rows = [dict(rep=0, phase="prefill", metric="energy_j", value=2.0, idx=0, label="total", t_ns=None),
            dict(rep=0, phase="prefill", metric="prefill_ns", value=0.25e9, idx=0, label="", t_ns=None)]
    assert summarize_energy(pd.DataFrame(rows), 10, 10)["avg_power_w_prefill"] == pytest.approx(8.0)


# --- cooldown ----------------------------------------------------------------------------------

def test_wait_cooldown_waits_for_the_temperature():
    temps = iter([80.0, 75.0, 62.0, 55.0, 40.0])
    waited = wait_cooldown(seconds=0.01, temp_c=60.0, read_temp=lambda: next(temps), poll_s=0.005)
    assert waited >= 0.01 and next(temps) == 40.0  # stopped at 55


def test_wait_cooldown_gives_up():
    assert wait_cooldown(temp_c=30.0, timeout_s=0.05, read_temp=lambda: 90.0, poll_s=0.01) < 1.0
    assert wait_cooldown(temp_c=30.0, read_temp=lambda: None) < 1.0           # no sensor: no wait
    assert wait_cooldown() < 0.5


def test_telemetry_without_a_power_source_says_so(tmp_path, capsys, tiny_gguf):
    """On a machine with no readable power source (this VM: no tegrastats, NVML or RAPL) the run's
    terminal and its report say why there is no energy per token; run.json alone used to know."""
    import pandas as pd

    from edgebench.analysis.energy import telemetry_gap
    from edgebench.cli import main

    case = {"profile": ("telemetry",), "info": {"profiler_notes": {"telemetry": {"skipped": {"rapl": "no zones"}}}}}
    empty = pd.DataFrame({"metric": ["prefill_ns"]})
    assert telemetry_gap(case, empty) == "telemetry: no power source was readable here, so no energy per token (rapl: no zones)"
    assert telemetry_gap(case, pd.DataFrame({"metric": ["energy_j"]})) is None
    assert telemetry_gap({"profile": ()}, empty) is None
    out = tmp_path / "out"
    code = main(["run", "-m", str(tiny_gguf["Q8_0"]), "-p", "8", "-n", "2", "-r", "1", "--profile", "telemetry",
                 "-o", str(out)])
    err = capsys.readouterr().err
    from edgebench.store.database import Store

    store = Store(out, create=False)
    (run,) = store.list_runs()
    measured = store.get_samples(run.run_id)["metric"].isin(("energy_j", "power_w")).any()
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    said = ("note: telemetry: no power source was readable here" in err,
            "no power source was readable" in (run_dir / "report.md").read_text())
    assert code == 0 and said == ((not measured),) * 2, err  # said exactly when nothing was measured
