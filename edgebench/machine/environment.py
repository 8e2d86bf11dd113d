"""What makes a number reproducible: versions, CPU, OS, and platform state, for run.json.

The machine is read through machine.probe's HostProbe (the one device detection reads). Every
platform probe is optional: a missing tool, file or permission gives None, never an error.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import TYPE_CHECKING, Any

from edgebench import __version__
from edgebench.machine.probe import HostProbe

if TYPE_CHECKING:
    from edgebench.machine.profiles import DeviceProfile


def physical_cores() -> int:
    """Physical core count (llama-bench's default thread count)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


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


def _nvpmodel(host: HostProbe) -> tuple[int | None, str | None]:
    mode_id, name = parse_nvpmodel(host.run(["nvpmodel", "-q"]))
    if mode_id is None:  # the service's state file + the mode names in the config
        m = re.search(r"pmode:\s*(\d+)", host.read("/var/lib/nvpmodel/status") or "")
        if m:
            mode_id = int(m.group(1))
            names = dict(re.findall(r"POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)", host.read("/etc/nvpmodel.conf") or ""))
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


def _jetson_clocks(host: HostProbe) -> bool | None:
    state = parse_jetson_clocks(host.run(["jetson_clocks", "--show"]))
    if state is not None or not host.exists("/etc/nv_tegra_release"):
        return state
    # Without root, jetson_clocks --show fails: the same test on sysfs (it pins min to max).
    pinned = []
    for d in host.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"):
        lo, hi = host.read(f"{d}/scaling_min_freq"), host.read(f"{d}/scaling_max_freq")
        if lo and hi:
            pinned.append(lo == hi)
    for d in host.glob("/sys/devices/platform/*.gpu/devfreq_dev") + host.glob("/sys/devices/*.ga10b/devfreq/*"):
        lo, hi = host.read(f"{d}/min_freq"), host.read(f"{d}/max_freq")
        if lo and hi:
            pinned.append(lo == hi)
    return all(pinned) if pinned else None


def cpu_governor(host: HostProbe) -> str | None:
    """The scaling governor of every CPU ('performance'), or the distinct ones joined by ','."""
    govs = {g for g in (host.read(p) for p in host.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")) if g}
    return ",".join(sorted(govs)) if govs else None


def _power_source(host: HostProbe) -> tuple[str | None, float | None]:
    """('ac' | 'battery', battery %) from /sys/class/power_supply; (None, None) when unknown."""
    on_ac, battery, pct = None, None, None
    for d in host.glob("/sys/class/power_supply/*"):
        kind = host.read(f"{d}/type")
        if kind == "Mains" and host.read(f"{d}/online") is not None:
            on_ac = (on_ac or False) or host.read(f"{d}/online") == "1"
        elif kind == "Battery":
            status = host.read(f"{d}/status")
            battery = status == "Discharging" if status else battery
            cap = host.read(f"{d}/capacity")
            pct = float(cap) if cap and cap.isdigit() else pct
    if battery:
        return "battery", pct
    if on_ac or battery is False:
        return "ac", pct
    return None, pct


def _cuda(host: HostProbe) -> dict[str, Any]:
    m = re.search(r"release (\d+\.\d+)", host.run(["nvcc", "--version"]) or "")
    nvml = host.nvml
    return {"cuda_nvcc": m.group(1) if m else None, "cuda_driver": nvml.cuda_driver, "nvidia_driver": nvml.driver,
            "gpus": nvml.names if nvml.available else None}


def collect_platform_state(host: HostProbe | None = None) -> dict[str, Any]:
    """Jetson power mode / clocks / L4T, CUDA, CPU governor, power source, of this machine (or
    ``host``'s). Blocks up to a few seconds (runs nvpmodel, jetson_clocks, nvcc, dpkg-query when
    present)."""
    host = host or HostProbe()
    is_jetson = host.exists("/etc/nv_tegra_release")
    mode_id, mode_name = _nvpmodel(host) if is_jetson else (None, None)
    jetpack = None
    if is_jetson:
        jp = host.run(["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"])
        jetpack = jp.strip() or None if jp else None
    source, battery = _power_source(host)
    return {
        "device_model": host.dt_model,
        "l4t": l4t_version(host.tegra_release),
        "jetpack": jetpack,
        "nvpmodel_id": mode_id,
        "nvpmodel_mode": mode_name,
        "jetson_clocks": _jetson_clocks(host) if is_jetson else None,
        **_cuda(host),
        "cpu_governor": cpu_governor(host),
        "kernel_version": platform.version() or None,
        "power_source": source,
        "battery_percent": battery,
    }


def collect_environment(host: HostProbe | None = None) -> dict[str, Any]:
    """The run's environment record (run.json) of this machine, or of ``host`` (its files under
    its root; versions, OS and core counts are always the live machine's)."""
    host = host or HostProbe()
    return {
        "edgebench": __version__,
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": host.machine,
        "cpu_model": host.cpu_model or host.machine,
        "cpu_physical_cores": physical_cores(),
        "cpu_logical_cores": os.cpu_count(),
        "memory_total_bytes": host.memory_bytes,
        **collect_platform_state(host),
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


BANDWIDTH_CAP_BYTES = 256 * 2**20  # per array: far past any CPU cache
BANDWIDTH_MIN_BYTES = 32 * 2**20   # below this a copy measures a cache, not DRAM: not measured


def _memory_room_bytes() -> int | None:
    """Bytes this process can still allocate: MemAvailable, and the address-space limit (RLIMIT_AS)
    less what is mapped already; None when neither is known."""
    room = []
    try:
        with open("/proc/meminfo") as f:
            room += [int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:")]
    except OSError:
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            room.append(soft - mapped)
    except (ImportError, OSError, ValueError):
        pass
    return min(room) if room else None


def measure_memory_bandwidth(n_bytes: int | None = None, repeats: int = 5) -> tuple[float | None, str]:
    """Sustained memory bandwidth in GB/s, STREAM-copy style: the best of ``repeats`` copies of
    an array (read + write counted). Single-threaded numpy, so a lower bound of what several
    cores can pull; used for the roofline where a device profile has no spec figure.

    The two arrays are sized to the machine: at most BANDWIDTH_CAP_BYTES each and 1/8 of the
    memory this process can still get, so a small board or a memory limit is not pushed to an
    out-of-memory kill. Returns (GB/s, "") or (None, why it was not measured); never raises."""
    import time

    import numpy as np

    if n_bytes is None:
        room = _memory_room_bytes()
        n_bytes = BANDWIDTH_CAP_BYTES if room is None else min(BANDWIDTH_CAP_BYTES, room // 8)
    if n_bytes < BANDWIDTH_MIN_BYTES:
        return None, f"not measured: only {max(n_bytes, 0) * 8 / 2**20:.0f} MiB of memory free"
    try:
        src = np.ones(n_bytes // 8)
        dst = np.empty_like(src)
    except MemoryError:
        return None, f"not measured: 2 x {n_bytes / 2**20:.0f} MiB could not be allocated"
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9, ""


def boot_id() -> str | None:
    """This boot of the machine (Linux /proc/sys/kernel/random/boot_id); None elsewhere."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def memory_bandwidth_this_boot(cache_file, measure=measure_memory_bandwidth) -> tuple[float | None, str, str]:
    """measure_memory_bandwidth once per boot: the figure is kept in ``cache_file`` (JSON, keyed by
    the boot id) and reused by later runs of the same boot, so a short run does not pay a second of
    copying for a number that cannot have changed. Returns (GB/s, why not measured, when it was
    measured: "now" or the ISO time of the earlier measurement). Without a boot id (not Linux) it
    measures every time. A cache that cannot be read or written is ignored."""
    import json
    import time
    from pathlib import Path

    path, boot = Path(cache_file), boot_id()
    if boot:
        try:
            got = json.loads(path.read_text())
            if got.get("boot_id") == boot and isinstance(got.get("gbs"), (int, float)):
                return float(got["gbs"]), "", str(got.get("measured_at") or "earlier this boot")
        except (OSError, ValueError, AttributeError):
            pass
    gbs, why = measure()
    if boot and gbs is not None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"boot_id": boot, "gbs": gbs, "measured_at": stamp}))
            os.replace(tmp, path)
        except OSError:
            pass
    return gbs, why, "now"
