"""Which process owns a run, and whether a `running` run is really running.

A run's environment records its owner: host, pid, the kernel's boot id and the process's start
time (so a pid reused after a reboot, or by another process, is not taken for the owner). A run
whose status is `running` but whose owner on this host is gone (a parent killed by SIGKILL, a
power cut) is shown as `abandoned`; `--resume` takes it over. A run owned by another host keeps
`running`: from here nothing says whether it is alive.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from edgebench.store import database as db

OWNER_KEY = "owner"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), "" if unknown."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def owner() -> dict[str, Any]:
    """This process as a run's owner."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot_id": _read("/proc/sys/kernel/random/boot_id"),
            "start": _start_ticks(pid)}


def owner_alive(o: dict[str, Any] | None) -> bool | None:
    """True / False for an owner on this host; None when it cannot be told (another host, no record)."""
    if not o or o.get("host") != socket.gethostname():
        return None
    if o.get("boot_id") and o["boot_id"] != _read("/proc/sys/kernel/random/boot_id"):
        return False  # rebooted since
    pid = int(o.get("pid") or 0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return not o.get("start") or _start_ticks(pid) in ("", o["start"])


def shown_status(run: db.RunRow) -> str:
    """The status to show: `abandoned` for a `running` run whose owner is known to be gone."""
    if run.status == "running" and owner_alive(run.env.get(OWNER_KEY)) is False:
        return "abandoned"
    return run.status


def claim(store: db.Store, run: db.RunRow) -> None:
    """Make this process the owner of ``run`` (a resume) and mark it running again."""
    env = run.env | {OWNER_KEY: owner()}
    with store.engine.begin() as c:
        c.execute(db.runs.update().where(db.runs.c.run_id == run.run_id).values(
            status="running", env_json=json.dumps(env, default=str)))
