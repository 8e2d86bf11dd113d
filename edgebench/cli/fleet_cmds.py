"""`fleet run` and `fleet status`: one sweep on every board of an Ansible inventory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgebench.cli.app import DEFAULT_OUT, app
from edgebench.errors import InputError

fleet_app = typer.Typer(help="Measure one sweep on every board of an Ansible inventory, over SSH.", pretty_exceptions_enable=False)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("run")
def fleet_run(
    inventory: Optional[Path] = typer.Option(None, "--inventory", "-i", help="Ansible inventory (INI or YAML); groups are device classes, host var edgebench_device names the profile."),
    config: Optional[Path] = typer.Option(None, "--config", help="sweep.toml measured on every board (as `edgebench run --config`)."),
    limit: Optional[str] = typer.Option(None, "--limit", "-l", help="Only these groups or hosts (comma list)."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Output folder: the store (unless --store), fleets/<fleet_id>/ with fleet.json and the fetched run folders."),
    store: Optional[str] = typer.Option(None, "--store", help="Results database URL or folder (default: OUT/edgebench.db), e.g. postgresql+psycopg://host/db."),
    resume: Optional[str] = typer.Option(None, "--resume", help="A fleet id: measure only the devices that have not delivered yet (inventory and config default to that run's)."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds per device for the whole sweep; past it the device is 'timed out'."),
    forks: int = typer.Option(10, "--forks", "-f", help="Devices measured in parallel (Ansible forks)."),
    copy_throttle: int = typer.Option(2, "--copy-throttle", help="Model file copies at once."),
    allow_version_mismatch: bool = typer.Option(False, "--allow-version-mismatch", help="Measure on boards (edgebench_install: present) whose edgebench version differs from this one."),
) -> None:
    """Install this edgebench on every board, run the sweep there (one at a time per board, boards in parallel), fetch and ingest the results. Exit 0 only when every device measured."""
    from edgebench.fleet import driver
    from edgebench.fleet import state as fleet_state
    from edgebench.present import fleet_view
    from edgebench.run import spec

    if resume:
        prev = fleet_state.load(out, resume)
        inventory, config = inventory or Path(prev.inventory), config or Path(prev.config)
        store = store or prev.store
    if inventory is None or config is None:
        raise InputError("fleet run needs --inventory and --config (or --resume FLEET_ID)")
    if timeout <= 0 or forks < 1 or copy_throttle < 1:
        raise InputError("--timeout must be > 0, --forks and --copy-throttle >= 1")
    sweep = spec.load_toml(config)
    spec.build_spec({}, sweep)  # the same checks as `edgebench run --config`, once, before any board is touched
    opts = driver.Options(inventory=inventory, config=sweep, config_path=config, out=out, store=store or str(out),
                          limit=limit, timeout_s=timeout, forks=forks, allow_version_mismatch=allow_version_mismatch,
                          copy_throttle=copy_throttle, resume=resume)
    st = driver.run(opts)
    fleet_view.print_fleet(st)
    raise typer.Exit(0 if all(r.status == "ok" for r in st.devices.values()) else 1)


@fleet_app.command("status")
def fleet_status(
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Output folder holding fleets/."),
    fleet_id: Optional[str] = typer.Argument(None, help="One fleet run (default: all of them)."),
) -> None:
    """Which devices delivered results for which sweep, fleet run by fleet run."""
    from edgebench.fleet import state as fleet_state
    from edgebench.present import fleet_view

    states = [fleet_state.load(out, fleet_id)] if fleet_id else fleet_state.load_all(out)
    if not states:
        raise InputError(f"no fleet runs under {out / 'fleets'}")
    for st in states:
        fleet_view.print_fleet(st)
