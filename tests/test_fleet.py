"""The fleet, for real: Ansible (through ansible-runner) drives three loopback "boards", each a real
sshd on 127.0.0.1 with its own port, host key and work folder (key auth only, no connection
sharing, so a stopped board really is unreachable). The sweep is the fake backend at tiny sizes,
so one fleet run takes seconds; one measured fleet run is shared by the assertions that read it."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)
pytestmark = [
    pytest.mark.skipif(SSHD is None, reason="no sshd binary (apt-get install openssh-server; .ci/run installs it)"),
    pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("ssh-keygen") is None, reason="no OpenSSH client"),
    pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-core not installed (pip install ansible-core)"),
]
BOARDS = {"orin-1": ("orin", "jetson-orin-nx-16gb"), "orin-2": ("orin", "jetson-orin-nano-8gb"), "pi-1": ("pi", "raspberry-pi-5")}
SSH_ARGS = "-o ControlMaster=no -o ControlPath=none -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """Three sshd processes standing in as boards; start(name) / stop(name) by PID."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {name: _free_port() for name in BOARDS}
        keys = root / "keys"
        keys.mkdir()
        for k in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / k)], check=True)
        shutil.copy(keys / "client.pub", keys / "authorized_keys")
        self.key = keys / "client"
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        for name in BOARDS:
            (root / "boards" / name).mkdir(parents=True)
            (root / f"sshd-{name}.conf").write_text("\n".join([
                f"Port {self.ports[name]}", "ListenAddress 127.0.0.1", f"HostKey {keys / 'host'}",
                f"PidFile {root / f'sshd-{name}.pid'}", f"AuthorizedKeysFile {keys / 'authorized_keys'}",
                "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
                "Subsystem sftp /usr/lib/openssh/sftp-server", ""]))
            self.start(name)

    def start(self, name: str) -> None:
        self.procs[name] = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / f"sshd-{name}.conf")],
                                            stdout=subprocess.DEVNULL, stderr=open(self.root / f"sshd-{name}.log", "a"))
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.ports[name])) == 0:
                    return
            assert self.procs[name].poll() is None, (self.root / f"sshd-{name}.log").read_text()
            time.sleep(0.05)
        raise AssertionError(f"sshd for {name} did not listen")

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        p.terminate()
        p.wait(10)

    def host_vars(self, name: str, **extra) -> dict:
        return {"ansible_host": "127.0.0.1", "ansible_port": self.ports[name], "ansible_user": getpass.getuser(),
                "ansible_ssh_private_key_file": str(self.key), "ansible_ssh_args": SSH_ARGS,
                "ansible_python_interpreter": sys.executable, "edgebench_device": BOARDS[name][1], "edgebench_verify": False,
                "edgebench_workdir": str(self.root / "boards" / name), "edgebench_venv_system_site_packages": True} | extra

    def inventory(self, path: Path, overrides: dict | None = None) -> Path:
        groups: dict[str, dict] = {}
        for name, (group, _) in BOARDS.items():
            groups.setdefault(group, {"hosts": {}})["hosts"][name] = self.host_vars(name, **(overrides or {}).get(name, {}))
        path.write_text(json.dumps({"all": {"children": groups}}))  # JSON is YAML
        return path


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("lab"))
    yield lab
    for name in list(lab.procs):
        lab.stop(name)


def fake_sweep(d: Path, name: str, **model) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.fake").write_text(json.dumps({"prefill_us_per_token": 20, "decode_us": 300} | model))
    cfg = d / f"{name}.toml"
    cfg.write_text(f'models = ["{name}.fake"]\nbackends = ["fake"]\nn_prompt = [8]\nn_gen = [4]\nreps = 2\n')
    return cfg


def fleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench.cli", "fleet", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, COLUMNS="200"))


def fleet_json(out: Path) -> dict:
    (path,) = sorted((out / "fleets").glob("*/fleet.json"), key=lambda p: p.stat().st_mtime)[-1:]
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def measured(lab, tmp_path_factory):
    """One fleet run over all three boards (shared by the tests that read its results)."""
    root = tmp_path_factory.mktemp("fleet")
    inv = lab.inventory(root / "lab.yml")
    cfg = fake_sweep(root, "fast")
    out = root / "out"
    t0 = time.perf_counter()
    proc = fleet("run", "--inventory", inv, "--config", cfg, "-o", out, "--timeout", 120)
    return {"proc": proc, "out": out, "inv": inv, "cfg": cfg, "state": fleet_json(out) if (out / "fleets").exists() else {},
            "elapsed": time.perf_counter() - t0}


def test_three_boards_measured_fetched_ingested_once(measured):
    from edgebench.store.database import Store

    proc, st = measured["proc"], measured["state"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {h: d["status"] for h, d in st["devices"].items()} == {"orin-1": "ok", "orin-2": "ok", "pi-1": "ok"}
    for h in BOARDS:
        assert h in proc.stdout
    store = Store(measured["out"], create=False)
    runs = store.list_runs()
    assert sorted(r.env["fleet"]["host"] for r in runs) == sorted(BOARDS)
    assert sorted(r.device for r in runs) == sorted(d for _, d in BOARDS.values())
    assert all(len(store.get_cases(r.run_id)) == 1 and store.get_cases(r.run_id)[0]["status"] == "ok" for r in runs)
    # ingesting the fetched bundles again leaves each run stored once, with the same samples
    from edgebench.store.bundle import ingest_bundle

    before = {r.run_id: len(store.get_samples(r.run_id)) for r in runs}
    for d in (measured["out"] / "fleets" / st["fleet_id"] / "bundles").glob("*/*"):
        ingest_bundle(store, d)
    assert {r.run_id: len(store.get_samples(r.run_id)) for r in store.list_runs()} == before


def test_status_and_runs_by_device(measured):
    st = measured["state"]
    proc = fleet("status", "-o", measured["out"])
    assert proc.returncode == 0, proc.stderr
    assert st["fleet_id"] in proc.stdout and proc.stdout.count(" ok ") >= 3
    by_dev = subprocess.run([sys.executable, "-m", "edgebench.cli", "runs", "--by-device", "-o", str(measured["out"])],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, COLUMNS="200"))
    assert by_dev.returncode == 0, by_dev.stderr
    for h, (_, device) in BOARDS.items():
        assert h in by_dev.stdout and device in by_dev.stdout


def test_unreachable_board_reported_others_deliver_and_resume(lab, measured, tmp_path):
    lab.stop("orin-2")
    try:
        out = tmp_path / "out"
        proc = fleet("run", "--inventory", measured["inv"], "--config", measured["cfg"], "-o", out, "--limit", "orin")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        st = fleet_json(out)
        assert st["devices"]["orin-1"]["status"] == "ok"
        assert st["devices"]["orin-2"]["status"] == "unreachable" and st["devices"]["orin-2"]["reason"]
        assert "unreachable" in proc.stdout
    finally:
        lab.start("orin-2")
    # --resume measures only the board that did not deliver
    proc = fleet("run", "--resume", st["fleet_id"], "-o", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st2 = fleet_json(out)
    assert st2["devices"]["orin-1"]["run_id"] == st["devices"]["orin-1"]["run_id"]
    assert st2["devices"]["orin-2"]["status"] == "ok"


def _measuring(lockfile: Path) -> bool:
    """Whether some process holds the board's flock now for `edgebench run` (the file outlives
    every run; the install step takes the same lock for a while before the sweep does)."""
    import fcntl

    if not lockfile.exists():
        return False
    with open(lockfile) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "run" in json.loads(f.read() or "{}").get("command", [])
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_busy_then_timed_out(lab, tmp_path):
    """A fleet run holding pi-1 (a sweep that hangs) makes a second one report it busy; the first
    is stopped at its --timeout and reports the board timed out."""
    inv = lab.inventory(tmp_path / "lab.yml")
    slow = fake_sweep(tmp_path / "slow", "hang", fail="hang", fail_at="decode")
    first = subprocess.Popen([sys.executable, "-m", "edgebench.cli", "fleet", "run", "-i", str(inv), "--config", str(slow),
                              "-o", str(tmp_path / "a"), "--limit", "pi-1", "--timeout", "45"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not _measuring(lab.root / "boards" / "pi-1" / "edgebench.lock"):
        time.sleep(0.2)
    second = fleet("run", "-i", inv, "--config", fake_sweep(tmp_path / "fast", "fast"), "-o", tmp_path / "b", "--limit", "pi-1")
    out, err = first.communicate(timeout=200)
    assert second.returncode == 1, second.stdout + second.stderr
    b = fleet_json(tmp_path / "b")["devices"]["pi-1"]
    assert b["status"] == "busy" and "busy" in b["reason"], b
    assert first.returncode == 1, out + err
    a = fleet_json(tmp_path / "a")["devices"]["pi-1"]
    assert a["status"] == "timed out" and "45 s" in a["reason"], a


def test_corrupt_bundle_rejected_nothing_ingested(measured, tmp_path):
    from edgebench.fleet import driver
    from edgebench.fleet.inventory import Host
    from edgebench.fleet.state import DeviceResult
    from edgebench.store.database import Store

    src = next((measured["out"] / "fleets" / measured["state"]["fleet_id"] / "bundles" / "pi-1").glob("*"))

    def bad_value(text: str) -> str:  # the last sample's value is not a number
        *head, last = text.rstrip("\n").split("\n")
        cells = last.split(",")
        cells[7] = "not-a-number"
        return "\n".join([*head, ",".join(cells)]) + "\n"

    damages = {"run.json": ("truncated", lambda t: t[: len(t) // 2]), "samples.csv": ("bad-value", bad_value)}
    for file, (name, damage) in damages.items():
        bundles, work = tmp_path / name, tmp_path / f"{name}-work" / src.name
        shutil.copytree(src, work)
        (work / file).write_text(damage((work / file).read_text()))
        bundles.mkdir()
        with tarfile.open(bundles / "pi-1.tar", "w") as t:  # as the board packs it
            t.add(work, arcname=src.name)
        store = Store(tmp_path / f"store-{name}")
        r = DeviceResult("pi-1", "raspberry-pi-5")
        driver._ingest(store, bundles, Host("pi-1", "raspberry-pi-5", ("pi",)), "f", r)
        assert r.status == "failed" and r.reason.startswith("bundle rejected"), (name, r)
        assert store.list_runs() == [] and store.get_samples(src.name).empty, name


def test_fleet_into_postgres(lab, measured, tmp_path, pg_url):
    proc = fleet("run", "-i", measured["inv"], "--config", measured["cfg"], "-o", tmp_path / "out", "--store", pg_url, "--limit", "pi")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from edgebench.store.bundle import ingest_bundle
    from edgebench.store.database import Store

    store = Store(pg_url)
    (run,) = store.list_runs()
    n = len(store.get_samples(run.run_id))
    ingest_bundle(store, next((tmp_path / "out" / "fleets").glob("*/bundles/pi-1/*")))
    assert [r.run_id for r in store.list_runs()] == [run.run_id] and len(store.get_samples(run.run_id)) == n
    store.engine.dispose()


def test_bad_input(lab, tmp_path):
    cfg = fake_sweep(tmp_path, "fast")
    (tmp_path / "bad.yml").write_text("all:\n  children: [oops\n")
    cases = {"missing": (tmp_path / "nope.yml", None, "no inventory at"),
             "malformed": (tmp_path / "bad.yml", None, "could not be parsed"),
             "unknown group": (lab.inventory(tmp_path / "lab.yml"), "gpu", "--limit 'gpu': no such group"),
             "unknown profile": (lab.inventory(tmp_path / "lab2.yml", {"pi-1": {"edgebench_device": "pi-9000"}}), None,
                                 "unknown device profile 'pi-9000'")}
    for what, (inv, limit, says) in cases.items():
        proc = fleet("run", "-i", inv, "--config", cfg, "-o", tmp_path / "out", *(["--limit", limit] if limit else []))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (what, proc.stderr)
        assert lines[0].startswith("edgebench: error:") and says in lines[0], (what, proc.stderr)


def test_board_without_python3_fails_with_one_line(lab, tmp_path):
    inv = lab.inventory(tmp_path / "lab.yml", {"pi-1": {"ansible_python_interpreter": "/nonexistent/python3"}})
    proc = fleet("run", "-i", inv, "--config", fake_sweep(tmp_path, "fast"), "-o", tmp_path / "out", "--limit", "pi-1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    d = fleet_json(tmp_path / "out")["devices"]["pi-1"]
    assert d["status"] == "failed" and d["reason"].startswith("no usable python3 at /nonexistent/python3"), d
    assert "\n" not in d["reason"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, COLUMNS="200"))


def test_report_side_by_side(measured, tmp_path):
    st = measured["state"]
    runs = [d["run_id"] for d in st["devices"].values()]
    proc = _cli("report", *runs, "--store", measured["out"], "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Across devices" in md
    table = md[md.index("## Across devices"):].split("\n## ")[0]
    for h, (_, device) in BOARDS.items():
        assert f"| {h} ({device}) | fast F16 |" in table
    figs = {p.name for p in (tmp_path / "rep" / "figures").glob("devices_*.png")}
    assert {"devices_decode_tok_s.png", "devices_ttft_ms.png", "devices_rss_peak_bytes.png"} <= figs


def test_compare_each_device_with_its_own_baseline(measured, tmp_path):
    st = measured["state"]
    bundles = measured["out"] / "fleets" / st["fleet_id"] / "bundles"
    for h, d in st["devices"].items():
        shutil.copytree(bundles / h / d["run_id"], tmp_path / "baselines" / d["device"])
    proc = _cli("compare", "--baseline-dir", tmp_path / "baselines", st["fleet_id"], "--store", measured["out"])
    assert proc.returncode in (0, 4), proc.stdout + proc.stderr  # 2 reps: nothing can be significant
    for _, device in BOARDS.values():
        assert f"== {device}:" in proc.stderr
    # a baseline from another class is refused
    shutil.rmtree(tmp_path / "baselines" / "jetson-orin-nx-16gb")
    shutil.copytree(bundles / "pi-1" / st["devices"]["pi-1"]["run_id"], tmp_path / "baselines" / "jetson-orin-nx-16gb")
    proc = _cli("compare", "--baseline-dir", tmp_path / "baselines", st["fleet_id"], "--store", measured["out"])
    assert proc.returncode == 2 and "measured on raspberry-pi-5, not jetson-orin-nx-16gb" in proc.stderr, proc.stderr
