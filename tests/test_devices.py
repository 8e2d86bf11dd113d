"""Device profiles: loading, sources for every number, detection on recorded device-tree strings,
resolve/verify on this machine, and the platform-state parsers of environment.py."""

from __future__ import annotations

import platform
from pathlib import Path

import psutil
import pytest

from edgebench.errors import InputError
from edgebench.machine import profiles
from edgebench.machine.environment import (
    collect_environment,
    fair_run_warnings,
    l4t_version,
    parse_jetson_clocks,
    parse_nvpmodel,
)
from edgebench.machine.profiles import DeviceProfile, detect, get_profile, load_profiles, resolve

MB = 2 ** 20
EXPECTED = {"jetson-orin-nx-16gb", "jetson-orin-nx-8gb", "jetson-orin-nano-8gb", "jetson-agx-orin-64gb",
            "jetson-agx-orin-32gb", "raspberry-pi-5", "generic-x86-64", "generic-arm64",
            "desktop-nvidia-gpu", "apple-silicon-mac"}


def jetson(model: str, mem_mb: int | None, compatible: list[str] | None = None, **kw) -> dict:
    ev = {"dt_model": model, "dt_compatible": compatible or [], "cpu_model": None, "nvml_names": ["Orin (nvgpu)"],
          "tegra_release": "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                           "DATE: Wed Jan  8 01:51:37 UTC 2025",
          "machine": "aarch64", "system": "Linux", "memory_bytes": mem_mb * MB if mem_mb else None}
    return ev | kw


# Device-tree models as printed by real boards (jetson_clocks --show "Machine:", test fixtures,
# the developer kits' names); memory totals as tegrastats printed them on such boards.
RECORDED = [
    (jetson("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15388), "jetson-orin-nx-16gb"),
    (jetson("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 7620), "jetson-orin-nx-8gb"),
    (jetson("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", None), "jetson-orin-nx-16gb"),
    (jetson("NVIDIA Jetson Orin Nano Developer Kit", 7620), "jetson-orin-nano-8gb"),
    (jetson("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", 7620,
            ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"]), "jetson-orin-nano-8gb"),
    (jetson("NVIDIA Jetson AGX Orin Developer Kit", 62841), "jetson-agx-orin-64gb"),
    (jetson("NVIDIA Jetson AGX Orin Developer Kit", 30697), "jetson-agx-orin-32gb"),
    (jetson("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", None,
            ["nvidia,p3768-0000+p3767-0001", "nvidia,p3767-0001", "nvidia,tegra234"]), "jetson-orin-nx-8gb"),
    (jetson("NVIDIA Jetson AGX Orin Developer Kit", 30697, ["nvidia,p3737-0000+p3701-0000", "nvidia,p3701-0000"]),
     "jetson-agx-orin-32gb"),
    ({"dt_model": "Raspberry Pi 5 Model B Rev 1.0", "dt_compatible": ["raspberrypi,5-model-b", "brcm,bcm2712"],
      "tegra_release": None, "cpu_model": None, "nvml_names": [], "machine": "aarch64", "system": "Linux",
      "memory_bytes": 8 * 1024 * MB}, "raspberry-pi-5"),
    ({"dt_model": None, "dt_compatible": [], "tegra_release": None, "cpu_model": "AMD Ryzen 9 7950X",
      "nvml_names": ["NVIDIA GeForce RTX 4090"], "machine": "x86_64", "system": "Linux",
      "memory_bytes": 64 * 1024 * MB}, "desktop-nvidia-gpu"),
    ({"dt_model": None, "dt_compatible": [], "tegra_release": None, "cpu_model": "Intel(R) Core(TM) i5-6500 CPU",
      "nvml_names": [], "machine": "x86_64", "system": "Linux", "memory_bytes": 16 * 1024 * MB}, "generic-x86-64"),
    ({"dt_model": None, "dt_compatible": [], "tegra_release": None, "cpu_model": "Apple M2 Pro", "nvml_names": [],
      "machine": "arm64", "system": "Darwin", "memory_bytes": 32 * 1024 * MB}, "apple-silicon-mac"),
    ({"dt_model": "Radxa ROCK 5B", "dt_compatible": ["rockchip,rk3588"], "tegra_release": None, "cpu_model": None,
      "nvml_names": [], "machine": "aarch64", "system": "Linux", "memory_bytes": 8 * 1024 * MB}, "generic-arm64"),
]


def test_every_profile_loads():
    profiles = load_profiles()
    assert set(profiles) == EXPECTED
    for name, p in profiles.items():
        assert p.name == name and p.description and p.telemetry and Path(p.path).name == f"{name}.toml"
        assert "n_gpu_layers" in p.recommended and "n_threads" in p.recommended


def _numbers(prefix: str, value) -> list[str]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [prefix]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(f"{prefix}.{k}", v)]
    if isinstance(value, (list, tuple)):
        return [n for i, v in enumerate(value) for n in _numbers(f"{prefix}.{i}", v)]
    return []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_number_has_a_source(name):
    p = get_profile(name)
    numbers = []
    for key in ("memory_bytes", "mem_bandwidth_gbs", "peak_tflops_fp16", "peak_tflops_fp32", "peak_int8_tops"):
        numbers += _numbers(key, getattr(p, key))
    numbers += _numbers("power_modes", p.power_modes) + _numbers("detect.memory_gib", p.detect.get("memory_gib"))
    for path in numbers:
        parts = path.split(".")
        covering = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        assert any(c in p.sources for c in covering), f"{name}: no source for {path}"
    for key, text in p.sources.items():
        assert isinstance(text, str) and len(text) > 10, f"{name}: empty source for {key}"
    if p.recommended.get("cuda_build") or p.recommended.get("cmake_args"):
        assert "recommended.cmake_args" in p.sources


def test_derived_numbers_say_so():
    nx = get_profile("jetson-orin-nx-16gb")
    assert nx.mem_bandwidth_gbs == 102.4 and nx.sources["mem_bandwidth_gbs"].startswith("derived:")
    assert nx.peak_tflops_fp32 == 1.9 and "derived" in nx.sources["peak_tflops_fp32"]


def test_aliases_and_unknown_names():
    assert get_profile("jetson-orin").name == "jetson-orin-nx-16gb"  # Lu et al. 2024's device
    assert get_profile("Orin-Nano").name == "jetson-orin-nano-8gb"
    with pytest.raises(InputError) as e:
        get_profile("nope")
    msg = str(e.value)
    assert "nope" in msg and all(n in msg for n in EXPECTED) and "\n" not in msg


def test_orin_nano_super_bandwidth_per_power_mode():
    nano = get_profile("jetson-orin-nano-8gb")
    assert nano.mem_bandwidth_gbs == 68.0 and nano.bandwidth_gbs() == 68.0
    assert nano.bandwidth_gbs("MAXN_SUPER") == 102.0 and nano.bandwidth_gbs("25W") == 102.4
    assert nano.bandwidth_gbs("7W") == pytest.approx(68.3) and nano.bandwidth_gbs("unknown") == 68.0
    assert nano.power_mode("MAXN_SUPER")["id"] == 2
    nx = get_profile("jetson-orin-nx-16gb")
    assert nx.power_modes["stock"]["default"] == 2 and nx.power_mode("10W")["emc_max_mhz"] == 2133


@pytest.mark.parametrize("evidence, expected", RECORDED, ids=[e for _, e in RECORDED])
def test_detection_on_recorded_evidence(evidence, expected):
    assert detect(evidence).name == expected


def test_verify_against_recorded_evidence():
    nx16 = RECORDED[0][0]
    assert resolve("jetson-orin", evidence=nx16)[:2] == (get_profile("jetson-orin-nx-16gb"), True)
    with pytest.raises(InputError, match="detected jetson-orin-nx-16gb"):
        resolve("jetson-orin-nano-8gb", evidence=nx16)
    p, ok, detail = resolve("raspberry-pi-5", verify=False, evidence=nx16)
    assert not ok and "Raspberry Pi 5" in detail
    # a part number that contradicts the profile is decisive
    with pytest.raises(InputError, match="needs module part number p3701-0005"):
        resolve("jetson-agx-orin-64gb", evidence=RECORDED[8][0])


def test_unknown_architecture_gets_a_generic_profile():
    p = detect({"machine": "riscv64", "system": "Linux", "dt_model": None, "dt_compatible": [],
                "tegra_release": None, "cpu_model": None, "nvml_names": [], "memory_bytes": 4 * 1024 * MB})
    assert p.name == "generic-riscv64" and p.memory_bytes is None


def this_machine_is_a_plain_x86() -> bool:
    ev = profiles.probe()
    return ev["machine"] == "x86_64" and not ev["nvml_names"] and not ev["tegra_release"]


def test_resolve_on_this_machine():
    ev = profiles.probe()
    assert ev["memory_bytes"] == psutil.virtual_memory().total and ev["machine"] == platform.machine()
    with pytest.raises(InputError) as e:
        resolve("jetson-orin")
    msg = str(e.value)
    assert msg.startswith("this machine is not jetson-orin-nx-16gb: detected ")
    assert f"detected {detect(ev).name} " in msg and "--no-verify" in msg
    p, ok, detail = resolve("jetson-orin", verify=False)
    assert p.name == "jetson-orin-nx-16gb" and ok is False and "not jetson-orin-nx-16gb" in detail
    if this_machine_is_a_plain_x86():
        assert "no /etc/nv_tegra_release" in msg
        assert resolve("auto")[:2] == (get_profile("generic-x86-64"), True)
        assert resolve("generic-x86-64")[1] is True


def test_memory_bytes():
    assert profiles.memory_bytes(get_profile("jetson-orin")) == 16 * 2 ** 30
    assert profiles.memory_bytes(get_profile("generic-x86-64")) == psutil.virtual_memory().total


def test_profiles_are_validated():
    with pytest.raises(ValueError, match="positive"):
        DeviceProfile(name="x", description="x", mem_bandwidth_gbs=-1)
    with pytest.raises(ValueError, match="telemetry"):
        DeviceProfile(name="x", description="x", telemetry=("powermeter",))


def test_extra_profile_folder(tmp_path, monkeypatch):
    (tmp_path / "my-board.toml").write_text(
        'name = "my-board"\ndescription = "a board"\ntelemetry = ["psutil"]\n'
        '[detect]\ndt_model = ["My Board"]\n[sources]\n')
    monkeypatch.setenv("EDGEBENCH_DEVICE_PATH", str(tmp_path))
    assert "my-board" in load_profiles() and get_profile("my-board").description == "a board"
    monkeypatch.delenv("EDGEBENCH_DEVICE_PATH")
    assert "my-board" not in load_profiles()


def test_profiles_ship_inside_the_package():
    from importlib import resources

    shipped = resources.files("edgebench") / "device_profiles"
    assert {p.name for p in shipped.iterdir() if p.name.endswith(".toml")} == {f"{n}.toml" for n in EXPECTED}


# --- platform state (environment.py) on recorded command output --------------------------------

def test_platform_state_parsers():
    assert l4t_version("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64") == "36.4.3"
    assert l4t_version(None) is None and l4t_version("garbage") is None
    assert parse_nvpmodel("NV Power Mode: MAXN_SUPER\n2\n") == (2, "MAXN_SUPER")
    assert parse_nvpmodel("NV Power Mode: 15W\n0\n") == (0, "15W")
    assert parse_nvpmodel(None) == (None, None)
    # jetson_clocks --show after `jetson_clocks` on a TX1 (hordiales/jetson-tx1-dev SCRIPTS.md)
    pinned = ("SOC family:tegra210  Machine:jetson_tx1\nOnline CPUs: 0-3\n"
              "cpu0: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000\n"
              "cpu1: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000\n"
              "GPU MinFreq=998400000 MaxFreq=998400000 CurrentFreq=998400000\n"
              "EMC MinFreq=12750000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1\n")
    assert parse_jetson_clocks(pinned) is True
    # an Orin NX without it (GitHub issue open-rdc/orne-box#121)
    free = ("SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit\n"
            "Online CPUs: 0-7\n"
            "cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1728000 IdleStates: WFI=1 c7=1 \n"
            "cpu1:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1881600 IdleStates: WFI=1 c7=1 \n")
    assert parse_jetson_clocks(free) is False
    assert parse_jetson_clocks("") is None and parse_jetson_clocks("nothing useful") is None


def test_collect_environment_keeps_its_keys_and_never_raises():
    env = collect_environment()
    for key in ("edgebench", "python", "os", "kernel", "machine", "cpu_model", "cpu_physical_cores",
                "cpu_logical_cores", "memory_total_bytes", "nvpmodel_mode", "nvpmodel_id", "jetson_clocks",
                "l4t", "jetpack", "cuda_nvcc", "cuda_driver", "cpu_governor", "power_source"):
        assert key in env
    if not Path("/etc/nv_tegra_release").exists():
        assert env["l4t"] is None and env["nvpmodel_mode"] is None and env["jetson_clocks"] is None


def test_fair_run_warnings():
    orin = get_profile("jetson-orin-nx-16gb")
    good = {"jetson_clocks": True, "nvpmodel_mode": "MAXN", "nvpmodel_id": 0, "cpu_governor": "performance"}
    assert fair_run_warnings(orin, good) == []
    bad = fair_run_warnings(orin, {"jetson_clocks": False, "nvpmodel_mode": None, "nvpmodel_id": None,
                                   "cpu_governor": "schedutil"})
    assert any(w.startswith("jetson_clocks is not on") for w in bad)
    assert any("nvpmodel" in w for w in bad)
    assert "CPU governor is schedutil, not performance" in bad
    laptop = fair_run_warnings(get_profile("generic-x86-64"),
                               {"cpu_governor": "powersave", "power_source": "battery", "battery_percent": 55.0})
    assert laptop == ["CPU governor is powersave, not performance",
                      "running on battery (55%): clocks and power may be capped"]
    assert fair_run_warnings(get_profile("generic-x86-64"), {"cpu_governor": None}) == []  # a VM: unknown


def test_memory_bandwidth_is_measured_once_per_boot(tmp_path, monkeypatch):
    from edgebench.machine import environment as env

    calls = []

    def measure():
        calls.append(1)
        return 12.5 + len(calls), ""

    monkeypatch.setattr(env, "boot_id", lambda: "boot-a")
    cache_file = tmp_path / "sub" / "bw.json"
    assert env.memory_bandwidth_this_boot(cache_file, measure) == (13.5, "", "now")
    gbs, why, when = env.memory_bandwidth_this_boot(cache_file, measure)
    assert (gbs, why, len(calls)) == (13.5, "", 1) and when.endswith("Z")  # reused, with its time
    monkeypatch.setattr(env, "boot_id", lambda: "boot-b")  # a reboot: measured again
    assert env.memory_bandwidth_this_boot(cache_file, measure)[:2] == (14.5, "") and len(calls) == 2
    cache_file.write_text("{not json")  # a damaged cache is measured over, never an error
    assert env.memory_bandwidth_this_boot(cache_file, measure)[0] == 15.5
    monkeypatch.setattr(env, "boot_id", lambda: None)  # no boot id: every run measures
    env.memory_bandwidth_this_boot(cache_file, measure)
    env.memory_bandwidth_this_boot(cache_file, measure)
    assert len(calls) == 5


def test_failed_bandwidth_measurement_is_not_cached(tmp_path, monkeypatch):
    from edgebench.machine import environment as env

    monkeypatch.setattr(env, "boot_id", lambda: "boot-a")
    cache_file = tmp_path / "bw.json"
    assert env.memory_bandwidth_this_boot(cache_file, lambda: (None, "not measured: x"))[:2] == (None, "not measured: x")
    assert not cache_file.exists()


def test_devices_show_is_tables_with_sources_and_power_modes():
    import io

    from rich.console import Console

    from edgebench.machine.profiles import DeviceProfile, get_profile
    from edgebench.present.device_view import print_device

    buf = io.StringIO()
    print_device(get_profile("orin-nano"), Console(file=buf, width=120))
    text = buf.getvalue()
    assert "power modes 'super'" in text and "MAXN_SUPER" in text and "102.4" in text and "{" not in text
    assert "68 GB/s" in text and "WayfindR-driver" in text  # the figure next to its source
    hostile = DeviceProfile(name="x", description="[bold]desc[/bold]", mem_bandwidth_gbs=10.0,
                            sources={"mem_bandwidth_gbs": "[red]not markup[/red]", "other": "[link=x]y[/link]"})
    buf = io.StringIO()
    print_device(hostile, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "[bold]desc[/bold]" in text and "[red]not markup[/red]" in text and "[link=x]y[/link]" in text
