"""One probe of the host: CPU model, device tree, Tegra release, NVML's GPUs and driver, memory.

Device detection (machine.profiles.probe) and the run's environment record
(machine.environment.collect_environment) both read the machine through a HostProbe, so run.json
and detection cannot disagree about it. Files are read under ``root`` ("/" on the live machine, a
recorded tree in tests); commands, NVML, psutil and the platform module can only describe the live
machine, so under another root commands and NVML report nothing. Every probe is optional: a
missing file, tool or permission gives None (or an empty list), never an error.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

# /proc/cpuinfo keys naming the CPU, in no preference: the first one in the file wins. x86 and
# older ARM kernels write "model name", Raspberry Pi kernels "Hardware", MIPS "cpu model".
_CPU_MODEL_KEYS = ("model name", "hardware", "cpu model")


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The CPU's name in the text of a /proc/cpuinfo, or None when it names none."""
    for line in cpuinfo.splitlines():
        if line.lower().startswith(_CPU_MODEL_KEYS) and ":" in line:
            return line.split(":", 1)[1].strip() or None
    return None


@dataclass(frozen=True)
class NvmlFacts:
    """What NVML says (available False without a driver, without nvidia-ml-py, or not live)."""

    available: bool = False
    names: list[str] = field(default_factory=list)
    driver: str | None = None  # NVIDIA driver version, "550.54.14"
    cuda_driver: str | None = None  # the CUDA version the driver supports, "12.4"


def _nvml() -> NvmlFacts:
    try:
        import pynvml
    except ImportError:
        return NvmlFacts()
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded...
        return NvmlFacts()

    def text(v) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    driver = cuda = None
    names: list[str] = []
    try:
        driver = text(pynvml.nvmlSystemGetDriverVersion())
        v = pynvml.nvmlSystemGetCudaDriverVersion()
        cuda = f"{v // 1000}.{v % 1000 // 10}"
        names = [text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
                 for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return NvmlFacts(True, names, driver, cuda)


class HostProbe:
    """The facts of one machine, each read once (on first use)."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)
        self.live = self.root.resolve() == Path("/")

    # -- access under root --------------------------------------------------------------------
    def read(self, path: str) -> str | None:
        """Text of the file at absolute ``path`` under root, blanks stripped; None if unreadable."""
        try:
            return (self.root / path.lstrip("/")).read_bytes().decode("utf-8", "replace").strip()
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return (self.root / path.lstrip("/")).exists()

    def glob(self, pattern: str) -> list[str]:
        """Absolute paths (as seen from root) matching ``pattern``, sorted."""
        return sorted("/" + str(p.relative_to(self.root)) for p in self.root.glob(pattern.lstrip("/")))

    def run(self, cmd: list[str], timeout: float = 10.0) -> str | None:
        """stdout of a command that succeeded on the live machine, else None (absent tool, no
        permission, timeout, or a recorded root)."""
        if not self.live:
            return None
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    # -- facts --------------------------------------------------------------------------------
    @cached_property
    def cpu_model(self) -> str | None:
        """/proc/cpuinfo's CPU name; on the live machine else macOS's brand string, else
        platform.processor(); None when nothing names it."""
        found = parse_cpu_model(self.read("/proc/cpuinfo") or "")
        if found or not self.live:
            return found
        if platform.system() == "Darwin":
            brand = (self.run(["sysctl", "-n", "machdep.cpu.brand_string"], timeout=5) or "").strip()
            if brand:
                return brand
        return platform.processor() or None

    @cached_property
    def dt_model(self) -> str | None:
        """The device tree's model ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit")."""
        model = self.read("/proc/device-tree/model")
        return model.strip("\x00\n ") or None if model else None

    @cached_property
    def dt_compatible(self) -> list[str]:
        """The device tree's compatible strings (module part numbers on a Jetson)."""
        return [c for c in (self.read("/proc/device-tree/compatible") or "").split("\x00") if c]

    @cached_property
    def tegra_release(self) -> str | None:
        """First line of /etc/nv_tegra_release (Jetson's L4T release), None elsewhere."""
        release = self.read("/etc/nv_tegra_release")
        return release.splitlines()[0].strip() if release else None

    @cached_property
    def nvml(self) -> NvmlFacts:
        """NVML's GPUs and driver. Blocks for NVML init (well under a second)."""
        return _nvml() if self.live else NvmlFacts()

    @property
    def machine(self) -> str:
        return platform.machine()

    @property
    def system(self) -> str:
        return platform.system()

    @cached_property
    def memory_bytes(self) -> int:
        import psutil

        return int(psutil.virtual_memory().total)
