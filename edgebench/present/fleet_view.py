"""Terminal views of a fleet: the per-device status of a fleet run, and the store's runs by device.

Host names, reasons and sweep names come from inventories, boards and files: every one is escaped
before rich prints it (a reason may well contain '[...]')."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from edgebench.present.tables import console_for_tables

_STYLE = {"ok": "green", "failed": "red", "unreachable": "red", "busy": "yellow", "timed out": "yellow"}


def print_fleet(st: Any) -> None:
    """One fleet run (a fleet.state.FleetState): a row per device, its status and the one-line reason."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.created_at))
    table = Table(title=escape(f"fleet {st.fleet_id} ({when}): sweep {st.config}"))
    for h in ("host", "device", "groups", "status", "run_id", "cases", "reason"):
        table.add_column(h, no_wrap=h not in ("reason",))
    for r in sorted(st.devices.values(), key=lambda r: r.host):
        style = _STYLE.get(r.status, "red")
        table.add_row(escape(r.host), escape(r.device), escape(",".join(r.groups)), f"[{style}]{escape(r.status)}[/{style}]",
                      escape(r.run_id), str(r.cases or ""), escape(r.reason))
    console = console_for_tables(200)
    console.print(table)
    n_ok = sum(r.status == "ok" for r in st.devices.values())
    console.print(escape(f"{n_ok}/{len(st.devices)} devices measured; store {st.store}"))


def runs_by_device(store) -> list[dict[str, Any]]:
    """A row per (device profile, fleet host): its runs, newest last, with the sweep each measured."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in store.list_runs():
        fleet = (r.env or {}).get("fleet") or {}
        groups.setdefault((r.device, fleet.get("host", "")), []).append({
            "run_id": r.run_id, "status": r.status, "created_at": r.created_at, "fleet_id": fleet.get("fleet_id", ""),
            "models": ",".join(str(m) for m in (r.spec or {}).get("models", []) if m)})
    return [{"device": d, "host": h, "runs": rs} for (d, h), rs in sorted(groups.items())]


def print_runs_by_device(store) -> None:
    table = Table(title=escape(f"runs by device in {store.url}"))
    for h in ("device", "host", "runs", "latest run", "when", "fleet", "status", "models"):
        table.add_column(h)
    for row in runs_by_device(store):
        last = row["runs"][-1]
        table.add_row(escape(row["device"]), escape(row["host"] or "-"), str(len(row["runs"])), escape(last["run_id"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(last["created_at"])), escape(last["fleet_id"] or "-"),
                      escape(last["status"]), escape(last["models"]))
    console_for_tables(200).print(table)
