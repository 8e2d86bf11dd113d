"""Fleet state: OUT/fleets/<fleet_id>/fleet.json, what each device of a fleet run delivered.

It is what `--resume FLEET_ID` skips and what `fleet status` lists; the measurements themselves are
in the store (each ingested run also carries environment.fleet = {fleet_id, host, groups}).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgebench.errors import InputError

STATUSES = ("ok", "failed", "unreachable", "busy", "timed out")


@dataclass
class DeviceResult:
    host: str
    device: str
    groups: tuple[str, ...] = ()
    status: str = "failed"
    reason: str = ""
    run_id: str = ""
    cases: int = 0
    finished_at: float = 0.0


@dataclass
class FleetState:
    fleet_id: str
    inventory: str
    config: str
    store: str
    created_at: float = field(default_factory=time.time)
    devices: dict[str, DeviceResult] = field(default_factory=dict)

    def delivered(self) -> set[str]:
        return {h for h, r in self.devices.items() if r.run_id and r.status in ("ok", "failed") and r.cases}


def fleet_dir(out: Path, fleet_id: str) -> Path:
    return Path(out) / "fleets" / fleet_id


def new_id() -> str:
    import secrets

    return time.strftime("fleet-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def save(out: Path, st: FleetState) -> Path:
    path = fleet_dir(out, st.fleet_id) / "fleet.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = asdict(st)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)
    return path


def _from_doc(doc: dict[str, Any]) -> FleetState:
    devices = {h: DeviceResult(**(d | {"groups": tuple(d.get("groups", ()))})) for h, d in doc.pop("devices", {}).items()}
    return FleetState(**doc, devices=devices)


def load(out: Path, fleet_id: str) -> FleetState:
    path = fleet_dir(out, fleet_id) / "fleet.json"
    try:
        return _from_doc(json.loads(path.read_text()))
    except FileNotFoundError:
        raise InputError(f"no fleet run {fleet_id!r} under {Path(out) / 'fleets'}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{path} is not a fleet state file: {e}") from None


def load_all(out: Path) -> list[FleetState]:
    """Every fleet run under OUT/fleets, oldest first (unreadable files skipped)."""
    found = []
    for path in sorted((Path(out) / "fleets").glob("*/fleet.json")):
        try:
            found.append(_from_doc(json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue
    return sorted(found, key=lambda s: s.created_at)
