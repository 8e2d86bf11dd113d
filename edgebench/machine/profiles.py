"""Device profiles: what a device is (memory, bandwidth, power modes, how to run fairly on it),
how to recognise it from evidence read on the machine, and how to check a named device.

Profiles are TOML files in the top-level ``devices/`` folder, shipped inside the wheel as
``edgebench/device_profiles`` (a symlink in the source tree). Every number in a profile names its
source in the profile's ``[sources]`` table. Extra folders of profiles can be given with the
``EDGEBENCH_DEVICE_PATH`` environment variable (``os.pathsep``-separated); a profile there
replaces a shipped one of the same name.

Detection works on an *evidence* dict (see ``probe()``, which reads it through machine.probe's
HostProbe), so it can be tested on recorded device-tree strings. A profile's ``[detect]`` rules all have to hold for it to match; the most
specific match wins (part number > device-tree model > NVML name > CPU model > the rest).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgebench.errors import InputError, did_you_mean
from edgebench.machine.probe import HostProbe

TELEMETRY_SOURCES = ("tegrastats", "nvml", "rapl", "psutil")
_DETECT_KEYS = {"dt_model", "dt_compatible", "tegra_release", "machine", "system", "cpu_model",
                "nvml_name", "memory_gib", "priority", "fallback"}
# How much each matched rule says about the device (ties broken by `priority`).
_WEIGHTS = {"dt_compatible": 16.0, "dt_model": 8.0, "nvml_name": 4.0, "cpu_model": 2.0,
            "tegra_release": 1.0, "memory_gib": 1.0, "machine": 0.5, "system": 0.5}
GIB = 1024 ** 3


@dataclass(frozen=True)
class DeviceProfile:
    """One device. Units: bytes, GB/s (1e9 B/s), TFLOPS, TOPS. ``None`` = not known (never guessed)."""

    name: str
    description: str
    aliases: tuple[str, ...] = ()
    memory_bytes: int | None = None          # None: read at run time (memory_bytes())
    mem_bandwidth_gbs: float | None = None   # peak DRAM bandwidth in the default/stock config
    peak_tflops_fp16: float | None = None
    peak_tflops_fp32: float | None = None
    peak_int8_tops: float | None = None      # sparse INT8, as vendors quote it
    detect: dict = field(default_factory=dict, compare=False)
    telemetry: tuple[str, ...] = ()
    recommended: dict = field(default_factory=dict, compare=False)
    power_modes: dict = field(default_factory=dict, compare=False)  # {table: {conf, default, modes: [..]}}
    fair_run: dict = field(default_factory=dict, compare=False)
    sources: dict = field(default_factory=dict, compare=False)
    path: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.name):
            raise ValueError(f"device name must be lowercase words joined by '-', got {self.name!r}")
        for key in ("memory_bytes", "mem_bandwidth_gbs", "peak_tflops_fp16", "peak_tflops_fp32", "peak_int8_tops"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, (int, float)) or v <= 0):
                raise ValueError(f"{self.name}: {key} must be a positive number, got {v!r}")
        unknown = set(self.telemetry) - set(TELEMETRY_SOURCES)
        if unknown:
            raise ValueError(f"{self.name}: unknown telemetry sources {sorted(unknown)}; known: {', '.join(TELEMETRY_SOURCES)}")
        bad = set(self.detect) - _DETECT_KEYS
        if bad:
            raise ValueError(f"{self.name}: unknown [detect] keys {sorted(bad)}")

    def power_mode(self, name: str | None) -> dict | None:
        """The power-mode entry called ``name`` (nvpmodel's mode name), from any of the profile's
        tables (stock first, as listed), or None."""
        if not name:
            return None
        for table in self.power_modes.values():
            for mode in table.get("modes", ()):
                if str(mode.get("name")) == name:
                    return mode
        return None

    def bandwidth_gbs(self, power_mode: str | None = None) -> float | None:
        """Peak DRAM bandwidth in GB/s for a power mode (its EMC cap), else the profile's value."""
        mode = self.power_mode(power_mode)
        if mode and mode.get("mem_bandwidth_gbs"):
            return float(mode["mem_bandwidth_gbs"])
        return self.mem_bandwidth_gbs


def _profile_dirs() -> list[Path]:
    dirs: list[Path] = []
    try:
        shipped = resources.files("edgebench") / "device_profiles"
        if shipped.is_dir():
            dirs.append(Path(str(shipped)))
    except (ModuleNotFoundError, NotADirectoryError, TypeError):
        pass
    source_tree = Path(__file__).resolve().parent.parent / "devices"
    if not dirs and source_tree.is_dir():  # a checkout where the symlink did not survive
        dirs.append(source_tree)
    for extra in filter(None, os.environ.get("EDGEBENCH_DEVICE_PATH", "").split(os.pathsep)):
        dirs.append(Path(extra))
    return dirs


def read_profile(path: Path) -> DeviceProfile:
    """One profile file. InputError (one line, naming the file) for a file that is not valid TOML,
    has unknown or missing keys, or values of the wrong kind: a profile from EDGEBENCH_DEVICE_PATH
    is the user's input."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        known = {f.name for f in dataclasses.fields(DeviceProfile)} - {"path"}
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown keys {sorted(extra)}")
        for key in ("aliases", "telemetry"):
            names = data.get(key, [])
            if not isinstance(names, list) or not all(isinstance(v, str) for v in names):
                raise ValueError(f"{key} must be a list of names")
            data[key] = tuple(names)
        for key in ("detect", "recommended", "power_modes", "fair_run", "sources"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"[{key}] must be a table")
        return DeviceProfile(**data, path=str(path))
    except OSError as e:
        raise InputError(f"device profile {path}: cannot read it: {e.strerror}") from None
    except (TypeError, ValueError) as e:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        msg = " ".join(str(e).split())
        raise InputError(f"device profile {path}: {msg[:200]}") from None


_CACHE: dict[tuple[str, ...], dict[str, DeviceProfile]] = {}


def load_profiles() -> dict[str, DeviceProfile]:
    """Every profile by name (shipped ones, then EDGEBENCH_DEVICE_PATH ones). Reads files once."""
    dirs = _profile_dirs()
    key = tuple(str(d) for d in dirs)
    if key not in _CACHE:
        profiles: dict[str, DeviceProfile] = {}
        for d in dirs:
            for path in sorted(d.glob("*.toml")):
                p = read_profile(path)
                profiles[p.name] = p
        if not profiles:
            raise RuntimeError(f"no device profiles found in {', '.join(key) or '(no folder)'}")
        _CACHE[key] = profiles
    return dict(_CACHE[key])


def get_profile(name: str) -> DeviceProfile:
    """The profile called ``name`` or having it as an alias (case-insensitive)."""
    profiles = load_profiles()
    want = name.strip().lower()
    if want in profiles:
        return profiles[want]
    for p in profiles.values():
        if want in (a.lower() for a in p.aliases):
            return p
    names = ", ".join(sorted(profiles))
    known = [*profiles, *(a.lower() for p in profiles.values() for a in p.aliases)]
    raise InputError(f"unknown device {name!r}{did_you_mean(want, known)}; devices: {names} (or 'auto')")


# --- evidence ---------------------------------------------------------------------------------

def probe(host: HostProbe | None = None) -> dict[str, Any]:
    """Raw evidence about this machine (or ``host``'s). Blocks for NVML init (well under a second).

    Keys: dt_model (str|None), dt_compatible (list[str]), tegra_release (first line of
    /etc/nv_tegra_release or None), cpu_model, nvml_names (list), machine, system, memory_bytes."""
    h = host or HostProbe()
    return {
        "dt_model": h.dt_model,
        "dt_compatible": h.dt_compatible,
        "tegra_release": h.tegra_release,
        "cpu_model": h.cpu_model,
        "nvml_names": h.nvml.names,
        "machine": h.machine,
        "system": h.system,
        "memory_bytes": h.memory_bytes,
    }


def _match(profile: DeviceProfile, ev: dict[str, Any]) -> tuple[bool, float, list[str]]:
    """(all rules hold, score, reasons a rule failed)."""
    d, score, failed = profile.detect, 0.0, []
    if d.get("fallback"):
        score -= 1.0
    if "machine" in d:
        if ev.get("machine") in d["machine"]:
            score += _WEIGHTS["machine"]
        else:
            failed.append(f"needs machine {'/'.join(d['machine'])}")
    if "system" in d:
        if ev.get("system") in d["system"]:
            score += _WEIGHTS["system"]
        else:
            failed.append(f"needs OS {'/'.join(d['system'])}")
    if "tegra_release" in d:
        if bool(ev.get("tegra_release")) == bool(d["tegra_release"]):
            score += _WEIGHTS["tegra_release"] if d["tegra_release"] else 0.0
        else:
            failed.append("needs /etc/nv_tegra_release" if d["tegra_release"] else "is not a Jetson")
    if "dt_model" in d:
        model = (ev.get("dt_model") or "").lower()
        if any(s.lower() in model for s in d["dt_model"]):
            score += _WEIGHTS["dt_model"]
        else:
            failed.append(f"needs a device-tree model containing {' or '.join(repr(s) for s in d['dt_model'])}")
    sku = False
    if "dt_compatible" in d and ev.get("dt_compatible"):
        # Only decisive when the machine has a compatible list: the part number names the SKU.
        if any(s in c for s in d["dt_compatible"] for c in ev["dt_compatible"]):
            score += _WEIGHTS["dt_compatible"]
            sku = True
        else:
            failed.append(f"needs module part number {'/'.join(d['dt_compatible'])}")
    if "cpu_model" in d:
        if re.search(d["cpu_model"], ev.get("cpu_model") or ""):
            score += _WEIGHTS["cpu_model"]
        else:
            failed.append(f"needs a CPU matching {d['cpu_model']!r}")
    if "nvml_name" in d:
        if any(re.search(d["nvml_name"], n) for n in ev.get("nvml_names") or ()):
            score += _WEIGHTS["nvml_name"]
        else:
            failed.append("needs an NVIDIA GPU visible to NVML")
    if "memory_gib" in d and ev.get("memory_bytes") and not sku:  # memory only tells SKUs apart
        lo, hi = d["memory_gib"]
        gib = ev["memory_bytes"] / GIB
        if lo <= gib <= hi:
            score += _WEIGHTS["memory_gib"]
        else:
            failed.append(f"needs {lo:g}-{hi:g} GiB of memory, has {gib:.1f}")
    return not failed, score + 0.1 * float(d.get("priority", 0)), failed


def describe_evidence(ev: dict[str, Any]) -> str:
    """One line about what was seen, for messages and run.json."""
    parts = [f"CPU: {ev.get('cpu_model') or 'unknown'}", str(ev.get("machine") or "unknown arch")]
    if ev.get("dt_model"):
        parts.append(f"device-tree model {ev['dt_model']!r}")
    parts.append(f"L4T {ev['tegra_release']!r}" if ev.get("tegra_release") else "no /etc/nv_tegra_release")
    if ev.get("nvml_names"):
        parts.append("GPU: " + ", ".join(ev["nvml_names"]))
    if ev.get("memory_bytes"):
        parts.append(f"{ev['memory_bytes'] / GIB:.1f} GiB")
    return ", ".join(parts)


def _unknown_profile(ev: dict[str, Any]) -> DeviceProfile:
    arch = re.sub(r"[^a-z0-9]+", "-", str(ev.get("machine") or "unknown").lower()).strip("-") or "unknown"
    return DeviceProfile(name=f"generic-{arch}", description=f"unprofiled {ev.get('machine')} machine",
                         telemetry=("psutil",), recommended={"n_threads": "auto", "n_gpu_layers": 0})


def detect(evidence: dict[str, Any] | None = None) -> DeviceProfile:
    """The best-matching profile for the evidence (``probe()`` when None); the generic profile for
    the architecture when nothing more specific matches."""
    ev = probe() if evidence is None else evidence
    best: tuple[float, DeviceProfile] | None = None
    for p in load_profiles().values():
        ok, score, _ = _match(p, ev)
        if ok and (best is None or score > best[0]):
            best = (score, p)
    return best[1] if best else _unknown_profile(ev)


def resolve(name: str = "auto", verify: bool = True,
            evidence: dict[str, Any] | None = None) -> tuple[DeviceProfile, bool, str]:
    """-> (profile, verified, detail). ``auto``: detect(). A named device is checked against the
    evidence: when it does not match, InputError if ``verify`` else verified=False."""
    ev = probe() if evidence is None else evidence
    seen = describe_evidence(ev)
    if name in ("", "auto"):
        p = detect(ev)
        return p, True, f"detected {p.name} ({seen})"
    profile = get_profile(name)
    ok, _, failed = _match(profile, ev)
    if ok:
        return profile, True, f"verified {profile.name} ({seen})"
    detected = detect(ev).name
    msg = f"this machine is not {profile.name}: detected {detected} ({seen}); {profile.name} {'; '.join(failed)}"
    if verify:
        raise InputError(msg + " (--no-verify runs it anyway)")
    return profile, False, msg


def memory_bytes(profile: DeviceProfile) -> int:
    """The profile's memory size, or this machine's total RAM when the profile leaves it open."""
    if profile.memory_bytes:
        return int(profile.memory_bytes)
    import psutil

    return int(psutil.virtual_memory().total)
