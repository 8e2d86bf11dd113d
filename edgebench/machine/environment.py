"""What makes a number reproducible: versions, CPU, OS, and platform state, for run.json.

Every platform probe is optional: a missing tool, file or permission gives None, never an error.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from edgebench import __version__

if TYPE_CHECKING:
    from edgebench.machine.profiles import DeviceProfile


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical core count (llama-bench's default thread count)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    """stdout of a command that succeeded, else None (absent tool, no permission, timeout)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def l4t_version(release_line: str | None) -> str | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> '36.4.3'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release_line or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_nvpmodel(text: str | None) -> tuple[int | None, str | None]:
    """`nvpmodel -q` output ('NV Power Mode: MAXN\\n0') -> (0, 'MAXN')."""
    if not text:
        return None, None
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    ids = re.findall(r"^\s*(\d+)\s*$", text, re.M)
    return (int(ids[-1]) if ids else None), (m.group(1) if m else None)


def _nvpmodel() -> tuple[int | None, str | None]:
    mode_id, name = parse_nvpmodel(_run(["nvpmodel", "-q"]))
    if mode_id is None:  # the service's state file + the mode names in the config
        m = re.search(r"pmode:\s*(\d+)", _read("/var/lib/nvpmodel/status") or "")
        if m:
            mode_id = int(m.group(1))
            names = dict(re.findall(r"POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", _read("/etc/nvpmodel.conf") or ""))
            name = name or names.get(str(mode_id))
    return mode_id, name


def parse_jetson_clocks(text: str | None) -> bool | None:
    """`jetson_clocks --show`: on when every listed CPU and the GPU have MinFreq == MaxFreq
    (jetson_clocks pins the minimum to the maximum); off as soon as one clock is not pinned;
    None when the output shows neither."""
    if not text:
        return None
    pairs = re.findall(r"^\s*(cpu\d+|GPU)\b.*?MinFreq=(\d+)\s+MaxFreq=(\d+)", text, re.M)
    if any(lo != hi for _, lo, hi in pairs):
        return False
    if any(p[0] == "GPU" for p in pairs) and any(p[0] != "GPU" for p in pairs):
        return True
    return None


def _jetson_clocks() -> bool | None:
    state = parse_jetson_clocks(_run(["jetson_clocks", "--show"]))
    if state is not None or not os.path.exists("/etc/nv_tegra_release"):
        return state
    # Without root, jetson_clocks --show fails: the same test on sysfs (it pins min to max).
    pinned = []
    for d in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"):
        lo, hi = _read(f"{d}/scaling_min_freq"), _read(f"{d}/scaling_max_freq")
        if lo and hi:
            pinned.append(lo == hi)
    for d in glob.glob("/sys/devices/platform/*.gpu/devfreq_dev") + glob.glob("/sys/devices/*.ga10b/devfreq/*"):
        lo, hi = _read(f"{d}/min_freq"), _read(f"{d}/max_freq")
        if lo and hi:
            pinned.append(lo == hi)
    return all(pinned) if pinned else None


def cpu_governor() -> str | None:
    """The scaling governor of every CPU ('performance'), or the distinct ones joined by ','."""
    govs = {g for g in (_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")) if g}
    return ",".join(sorted(govs)) if govs else None


def _power_source() -> tuple[str | None, float | None]:
    """('ac' | 'battery', battery %) from /sys/class/power_supply; (None, None) when unknown."""
    on_ac, battery, pct = None, None, None
    for d in glob.glob("/sys/class/power_supply/*"):
        kind = _read(f"{d}/type")
        if kind == "Mains" and _read(f"{d}/online") is not None:
            on_ac = (on_ac or False) or _read(f"{d}/online") == "1"
        elif kind == "Battery":
            status = _read(f"{d}/status")
            battery = status == "Discharging" if status else battery
            cap = _read(f"{d}/capacity")
            pct = float(cap) if cap and cap.isdigit() else pct
    if battery:
        return "battery", pct
    if on_ac or battery is False:
        return "ac", pct
    return None, pct


def _cuda() -> dict[str, Any]:
    out: dict[str, Any] = {"cuda_nvcc": None, "cuda_driver": None, "nvidia_driver": None, "gpus": None}
    m = re.search(r"release (\d+\.\d+)", _run(["nvcc", "--version"]) or "")
    out["cuda_nvcc"] = m.group(1) if m else None
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return out
    try:
        drv = pynvml.nvmlSystemGetDriverVersion()
        out["nvidia_driver"] = drv.decode() if isinstance(drv, bytes) else str(drv)
        v = pynvml.nvmlSystemGetCudaDriverVersion()
        out["cuda_driver"] = f"{v // 1000}.{v % 1000 // 10}"
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            n = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(n.decode() if isinstance(n, bytes) else str(n))
        out["gpus"] = names
    except Exception:
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return out


def collect_platform_state() -> dict[str, Any]:
    """Jetson power mode / clocks / L4T, CUDA, CPU governor, power source. Blocks up to a few
    seconds (runs nvpmodel, jetson_clocks, nvcc, dpkg-query when present)."""
    release = _read("/etc/nv_tegra_release")
    is_jetson = release is not None
    mode_id, mode_name = _nvpmodel() if is_jetson else (None, None)
    jetpack = None
    if is_jetson:
        jp = _run(["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"])
        jetpack = jp.strip() or None if jp else None
    source, battery = _power_source()
    model = _read("/proc/device-tree/model")
    return {
        "device_model": model.strip("\x00") if model else None,
        "l4t": l4t_version(release.splitlines()[0] if release else None),
        "jetpack": jetpack,
        "nvpmodel_id": mode_id,
        "nvpmodel_mode": mode_name,
        "jetson_clocks": _jetson_clocks() if is_jetson else None,
        **_cuda(),
        "cpu_governor": cpu_governor(),
        "kernel_version": platform.version() or None,
        "power_source": source,
        "battery_percent": battery,
    }


def collect_environment() -> dict[str, Any]:
    import psutil

    return {
        "edgebench": __version__,
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_physical_cores": physical_cores(),
        "cpu_logical_cores": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        **collect_platform_state(),
    }


def fair_run_warnings(profile: DeviceProfile, env: dict[str, Any]) -> list[str]:
    """One line per way this run departs from the profile's fair-run requirements (``[fair_run]``).
    Unknown state is only reported where the requirement matters most (Jetson clocks / mode)."""
    req, out = profile.fair_run, []
    if req.get("jetson_clocks"):
        if env.get("jetson_clocks") is False:
            out.append("jetson_clocks is not on: clocks follow the load and numbers vary (run `sudo jetson_clocks`)")
        elif env.get("jetson_clocks") is None:
            out.append("jetson_clocks state unknown (`jetson_clocks --show` needs root): clocks may follow the load")
    want_mode = req.get("nvpmodel")
    if want_mode:
        if env.get("nvpmodel_mode") is None and env.get("nvpmodel_id") is None:
            out.append("nvpmodel power mode unknown: record it (`nvpmodel -q`) so runs can be compared")
        elif want_mode != "fixed" and env.get("nvpmodel_mode") != want_mode:
            out.append(f"nvpmodel mode is {env.get('nvpmodel_mode')}, not {want_mode}")
    gov = req.get("cpu_governor")
    if gov and env.get("cpu_governor") and env["cpu_governor"] != gov:
        out.append(f"CPU governor is {env['cpu_governor']}, not {gov}")
    if req.get("power_source") == "ac" and env.get("power_source") == "battery":
        pct = env.get("battery_percent")
        out.append("running on battery" + (f" ({pct:.0f}%)" if pct is not None else "") + ": clocks and power may be capped")
    return out


def measure_memory_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Sustained memory bandwidth in GB/s, STREAM-copy style: the best of ``repeats`` copies of
    an ``n_bytes`` array (read + write counted). Single-threaded numpy, so a lower bound of what
    several cores can pull; used for the roofline where a device profile has no spec figure."""
    import time

    import numpy as np

    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9
