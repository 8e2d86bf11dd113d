"""The lab inventory, read by Ansible itself (`ansible-inventory --list`, through ansible-runner), so
INI, YAML and every inventory plugin mean here what they mean to the playbook.

edgebench reads these host variables (all optional but edgebench_device):
  edgebench_device           device profile name (edgebench/device_profiles); `run --device` gets it
  edgebench_verify           false: pass --no-verify (a stand-in board, e.g. in tests)
  edgebench_workdir          folder on the board (default ~/edgebench): venv, models, lock, runs
  edgebench_models_dir       where the board keeps model files (default <workdir>/models)
  edgebench_run_args         extra `edgebench run` flags for this board, e.g. "-t 4 -ngl 99"
  edgebench_install          wheel (default: install this edgebench's wheel into <workdir>/venv) |
                             present (use the edgebench already on the board, same version only)
  edgebench_venv_system_site_packages  true: the venv sees the board's own packages (llama-cpp-python
                             built for its GPU is then reused instead of rebuilt)
  edgebench_pip_args         extra pip flags, e.g. "--no-index --find-links /wheels" (boards offline)
  ansible_python_interpreter the board's python3
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebench.errors import InputError


@dataclass(frozen=True)
class Host:
    name: str
    device: str
    groups: tuple[str, ...]
    vars: dict[str, Any] = field(default_factory=dict)


def ansible_inventory(path: Path) -> dict[str, Any]:
    """`ansible-inventory -i PATH --list` as a dict; an unparsable inventory is an InputError."""
    import ansible_runner

    path = Path(path)
    if not path.exists():
        raise InputError(f"no inventory at {path}")
    env = dict(os.environ, ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True")
    out, err = ansible_runner.get_inventory("list", [str(path)], response_format="json", quiet=True, envvars=env)
    if not isinstance(out, dict):
        line = next((l.strip() for l in str(err or out).splitlines() if "ERROR" in l or "not" in l), str(err or out).strip())
        raise InputError(f"inventory {path} could not be parsed: {line[:300]}")
    return out


def _children(inv: dict[str, Any], group: str) -> set[str]:
    """All groups under ``group`` (itself included)."""
    seen, todo = set(), [group]
    while todo:
        g = todo.pop()
        if g not in seen:
            seen.add(g)
            todo.extend(inv.get(g, {}).get("children", []))
    return seen


def load(path: Path, limit: str | None = None) -> list[Host]:
    """The hosts of the inventory (only those in group or host ``limit`` when given), validated:
    every host names a known device profile."""
    from edgebench.machine.profiles import load_profiles

    inv = ansible_inventory(path)
    hostvars = inv.get("_meta", {}).get("hostvars", {})
    groups_of: dict[str, list[str]] = {}
    for g, body in inv.items():
        if g == "_meta":
            continue
        for h in body.get("hosts", []):
            groups_of.setdefault(h, []).append(g)
    names = sorted(set(hostvars) | set(groups_of))
    if not names:
        raise InputError(f"inventory {path} lists no hosts")
    if limit:
        wanted: set[str] = set()
        for part in (p.strip() for p in limit.replace(":", ",").split(",") if p.strip()):
            if part in names:
                wanted.add(part)
            elif part in inv and part != "_meta":
                members = _children(inv, part)
                wanted |= {h for h in names if set(groups_of.get(h, [])) & members}
            else:
                groups = sorted(g for g in inv if g not in ("_meta", "all", "ungrouped"))
                raise InputError(f"--limit {part!r}: no such group or host in {path} (groups: {', '.join(groups) or 'none'})")
        names = [n for n in names if n in wanted]
    profiles = load_profiles()
    hosts = []
    for n in names:
        hv = hostvars.get(n, {})
        device = hv.get("edgebench_device")
        if not device:
            raise InputError(f"inventory {path}: host {n} has no edgebench_device (a device profile name)")
        if device not in profiles:
            raise InputError(f"inventory {path}: host {n}: unknown device profile {device!r} "
                             f"(known: {', '.join(sorted(profiles))})")
        run_args = hv.get("edgebench_run_args", "")
        if not isinstance(run_args, str):
            raise InputError(f"inventory {path}: host {n}: edgebench_run_args must be a string of flags")
        install = hv.get("edgebench_install", "wheel")
        if install not in ("wheel", "present"):
            raise InputError(f"inventory {path}: host {n}: edgebench_install must be wheel or present, got {install!r}")
        hosts.append(Host(n, device, tuple(sorted(g for g in groups_of.get(n, []) if g not in ("all", "ungrouped"))), hv))
    return hosts

