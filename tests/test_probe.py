"""machine.probe: the one host probe that device detection and the run's environment record share."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgebench.machine import profiles
from edgebench.machine.environment import collect_environment
from edgebench.machine.probe import HostProbe, parse_cpu_model

DATA = Path(__file__).parent / "data" / "cpuinfo"


def recorded_root(tmp_path: Path, cpuinfo: str) -> Path:
    (tmp_path / "proc").mkdir()
    shutil.copy(DATA / cpuinfo, tmp_path / "proc" / "cpuinfo")
    return tmp_path


def test_detection_and_environment_read_the_same_cpu_on_an_arm_board(tmp_path):
    # A Raspberry Pi 4 on a 64-bit kernel: no "model name" line, the SoC in "Hardware".
    host = HostProbe(recorded_root(tmp_path, "raspberry-pi-4-arm64.txt"))
    assert not host.live
    evidence, env = profiles.probe(host), collect_environment(host)
    assert evidence["cpu_model"] == env["cpu_model"] == "BCM2835"


def test_recorded_root_reports_no_live_facts(tmp_path):
    host = HostProbe(recorded_root(tmp_path, "raspberry-pi-4-arm64.txt"))
    assert host.run(["true"]) is None and host.nvml.names == [] and not host.nvml.available
    assert host.dt_model is None and host.dt_compatible == [] and host.tegra_release is None
    env = collect_environment(host)
    assert env["l4t"] is None and env["nvpmodel_mode"] is None and env["gpus"] is None


def test_device_tree_and_tegra_release_under_root(tmp_path):
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
    (tmp_path / "proc" / "device-tree" / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0000\x00nvidia,tegra234\x00")
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    host = HostProbe(tmp_path)
    ev = profiles.probe(host)
    assert ev["dt_model"] == "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
    assert ev["dt_compatible"] == ["nvidia,p3768-0000+p3767-0000", "nvidia,tegra234"]
    env = collect_environment(host)
    assert env["device_model"] == ev["dt_model"] and env["l4t"] == "36.4.3"
    assert env["cpu_model"] == host.machine  # nothing names the CPU: the record says the architecture


def test_parse_cpu_model():
    assert parse_cpu_model("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i5-6500 CPU\n") \
        == "Intel(R) Core(TM) i5-6500 CPU"
    assert parse_cpu_model("system type\t: MT7621\ncpu model\t: MIPS 1004Kc V2.15\n") == "MIPS 1004Kc V2.15"
    assert parse_cpu_model("processor\t: 0\nCPU part\t: 0xd42\n") is None
    assert parse_cpu_model("") is None


def test_the_live_probe_is_the_default():
    host = HostProbe()
    assert host.live
    assert profiles.probe()["cpu_model"] == host.cpu_model
    assert collect_environment()["cpu_model"] == (host.cpu_model or host.machine)
