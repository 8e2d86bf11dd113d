"""A fleet run: the shipped playbook on every host through ansible-runner (devices in parallel,
`forks` at a time), Ansible's events turned into one status per device, and each fetched run folder
ingested into the store (edgebench.store.bundle.ingest_bundle: idempotent, whole or not at all).

A device's status: ok (measured, every case ok, ingested); failed (reason: the failing step's one
line, a rejected bundle, or cases that failed on the board, the measured ones still ingested);
unreachable (SSH could not reach it: reported, never dropped); busy (another fleet run holds its
lock); timed out (the sweep ran past --timeout and was stopped).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgebench.fleet import inventory, prepare
from edgebench.fleet.state import DeviceResult, FleetState, fleet_dir, new_id, save
from edgebench.store.database import Store

EXIT_BUSY, EXIT_TIMEOUT = 75, 124  # on_board.py's exit codes
_FAIL_EVENTS = ("runner_on_failed", "runner_on_unreachable")


@dataclass
class Options:
    inventory: Path
    config: dict[str, Any]       # the sweep (already validated by `edgebench run`'s parser)
    config_path: Path
    out: Path
    store: str                   # folder or database URL
    limit: str | None = None
    timeout_s: float = 3600.0    # per device, the whole sweep
    forks: int = 10
    allow_version_mismatch: bool = False
    copy_throttle: int = 2       # model copies at once (a lab's uplink, not the boards, is the limit)
    resume: str | None = None


def _first_line(*texts: Any) -> str:
    for t in texts:
        lines = [l.strip() for l in str(t or "").splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("edgebench: error:")]
        if errors or lines:
            return (errors or lines)[0][:300]
    return ""


def classify(task: str, event: str, res: dict[str, Any], python: str) -> tuple[str, str]:
    """(status, one-line reason) of a host from its failing Ansible event."""
    msg, stderr, stdout = res.get("msg", ""), res.get("stderr", ""), res.get("stdout", "")
    if event == "runner_on_unreachable":
        return "unreachable", _first_line(msg) or "unreachable"
    rc = res.get("rc")
    said = [l.strip() for l in str(stderr or "").splitlines() if l.startswith(("busy:", "timed out:"))]
    if rc == EXIT_BUSY:  # on_board.py's own line, after whatever the sweep printed
        return "busy", (said or ["busy: another fleet run measures on this device"])[-1]
    if rc == EXIT_TIMEOUT or "did not complete within" in str(msg):
        return "timed out", (said or [_first_line(msg) or "timed out"])[-1]
    if task == "check python3":  # the shell's own line about the interpreter, not a login banner
        said = [l.strip() for l in f"{stdout}\n{stderr}".splitlines() if python in l or "python" in l.lower()]
        return "failed", f"no usable python3 at {python}: {(said or [_first_line(stdout, stderr, msg) or f'rc {rc}'])[0][:300]}"
    return "failed", f"{task}: {_first_line(stderr, msg, stdout) or f'rc {rc}'}"


def _read_events(events) -> tuple[dict[str, tuple[str, str, dict]], dict[str, int]]:
    """-> ({host: (task, event, res) of its first failure}, {host: rc of `measure`})."""
    failures: dict[str, tuple[str, str, dict]] = {}
    measured: dict[str, int] = {}
    for ev in events:
        data = ev.get("event_data") or {}
        host, task, res = data.get("host"), data.get("task", ""), data.get("res") or {}
        if not host:
            continue
        if ev.get("event") in _FAIL_EVENTS and not data.get("ignore_errors") and host not in failures:
            failures[host] = (task, ev["event"], res)
        elif ev.get("event") == "runner_on_ok" and task == "measure":
            measured[host] = res.get("rc", 0)
    return failures, measured


def _ingest(store: Store, bundle_root: Path, host: inventory.Host, fleet_id: str, r: DeviceResult) -> None:
    """Ingest the one run folder fetched from ``host``, tagged with the fleet and host names."""
    import tarfile

    from edgebench.store.bundle import ingest_bundle

    tar, where = bundle_root / f"{host.name}.tar", bundle_root / host.name
    try:
        with tarfile.open(tar) as t:
            t.extractall(where, filter="data")  # names stay inside `where`, no links or devices
    except (OSError, tarfile.TarError) as e:
        r.status, r.reason = "failed", f"bundle rejected: {tar.name}: {e}"
        return
    found = [d for d in where.glob("*") if (d / "run.json").is_file()]
    if len(found) != 1:
        r.status, r.reason = "failed", f"bundle rejected: expected one run folder, found {len(found)}"
        return
    run_dir = found[0]
    try:
        doc = json.loads((run_dir / "run.json").read_text())
        doc.setdefault("environment", {})["fleet"] = {"fleet_id": fleet_id, "host": host.name, "groups": list(host.groups)}
        (run_dir / "run.json").write_text(json.dumps(doc, indent=2))
        run_id, n = ingest_bundle(store, run_dir)
    except Exception as e:  # any bad bundle fails this device only; ingest itself is all or nothing
        r.status, r.reason = "failed", f"bundle rejected: {_first_line(str(e)) or type(e).__name__}"
        return
    r.run_id, r.cases = run_id, n
    bad = [c for c in doc.get("cases", []) if c.get("status") == "failed"]
    if bad:
        r.status = "failed"
        r.reason = f"{len(bad)} of {n} case(s) failed on the board ({_first_line(bad[0].get('error'))}); the rest ingested"
    else:
        r.status, r.reason = "ok", f"{n} case(s) ingested"


def run(opts: Options, on_event=None) -> FleetState:
    """Measure the sweep on every host (of --limit, less those a resumed fleet already has)."""
    import ansible_runner

    from edgebench.fleet import state as state_mod

    hosts = inventory.load(opts.inventory, opts.limit)
    if opts.resume:
        st = state_mod.load(opts.out, opts.resume)
        done = st.delivered()
        hosts = [h for h in hosts if h.name not in done]
    else:
        st = FleetState(new_id(), str(Path(opts.inventory).resolve()), str(Path(opts.config_path).resolve()), opts.store)
    store = Store(opts.store)
    sweep_text, ship = prepare.device_sweep(opts.config, Path(opts.config_path).parent)
    needs_wheel = any(h.vars.get("edgebench_install", "wheel") == "wheel" for h in hosts)
    wheel, wheel_sha, version = prepare.build_wheel() if needs_wheel else (None, "", _version())
    fdir = fleet_dir(opts.out, st.fleet_id)
    bundles = fdir / "bundles"
    for h in hosts:
        shutil.rmtree(bundles / h.name, ignore_errors=True)  # a resumed device starts clean
        (bundles / f"{h.name}.tar").unlink(missing_ok=True)
        st.devices[h.name] = DeviceResult(h.name, h.device, h.groups, "failed", "no result from Ansible")
    if not hosts:
        save(opts.out, st)
        return st
    with tempfile.TemporaryDirectory(prefix="edgebench-fleet-") as pdd:
        sweep = Path(pdd) / "sweep.toml"
        sweep.write_text(sweep_text)
        helper = resources.files("edgebench.fleet") / "on_board.py"
        playbook = resources.files("edgebench.fleet") / "playbook.yml"
        (Path(pdd) / "project").mkdir()
        shutil.copy(str(playbook), Path(pdd) / "project" / "playbook.yml")
        extravars = {
            "eb_fleet_id": st.fleet_id, "eb_attempt": f"{st.fleet_id}-{int(time.time())}",
            "eb_wheel": str(wheel or ""), "eb_wheel_sha256": wheel_sha, "eb_version": version,
            "eb_allow_version_mismatch": opts.allow_version_mismatch, "eb_board_helper": str(helper),
            "eb_models": ship, "eb_sweep": str(sweep), "eb_timeout": int(opts.timeout_s), "eb_poll": 2 if opts.timeout_s <= 600 else 10,
            "eb_copy_throttle": max(1, opts.copy_throttle), "eb_staging": str(bundles),
        }
        r = ansible_runner.run(
            private_data_dir=pdd, playbook="playbook.yml", inventory=str(Path(opts.inventory).resolve()),
            limit=",".join(h.name for h in hosts), forks=max(1, opts.forks), extravars=extravars, quiet=True,
            envvars={  # pipelining: one SSH connection per task instead of three (no become here, so no requiretty issue)
                "ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False",
                "ANSIBLE_DEPRECATION_WARNINGS": "False"},
            event_handler=on_event)
        failures, measured = _read_events(r.events)
        (fdir / "ansible.log").parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r.stdout.name, fdir / "ansible.log")
    for h in hosts:
        res = st.devices[h.name]
        res.finished_at = time.time()
        if h.name in failures:
            task, event, data = failures[h.name]
            res.status, res.reason = classify(task, event, data, h.vars.get("ansible_python_interpreter", "python3"))
        elif h.name in measured:
            _ingest(store, bundles, h, st.fleet_id, res)
    save(opts.out, st)
    return st


def _version() -> str:
    from importlib import metadata

    return metadata.version("edgebench")
