"""Run ids: the one check of what a run id may be, applied wherever an id comes in from outside
(an ingested bundle's run.json, ``--resume``, ``show`` / ``export`` / ``report`` arguments).

A run id names a folder (OUT/<run_id>/ holds the run's bundle and report), so an id from a hostile
or broken bundle must never be a path: no '/', no '..', no NUL or control characters, nothing
absolute. edgebench makes ids like ``20261201-134406-2ede94`` (time + 6 hex digits, ``new()``);
other tools (a fleet, llama-bench imports) may make their own, so
the accepted pattern is a conservative superset: 1-64 ASCII letters, digits, '.', '_', '-',
starting with a letter or digit, with no '..' anywhere.
"""

from __future__ import annotations

import re
import time
import uuid

from edgebench.errors import InputError

MAX_LEN = 64  # the runs.run_id column is String(64)
_SAFE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LEN - 1}}}")


def new() -> str:
    """A new run id: the local time and 6 random hex digits (within the safe pattern)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def is_valid(run_id: object) -> bool:
    """Whether ``run_id`` is an id edgebench accepts: the safe pattern, with no '..'."""
    return isinstance(run_id, str) and bool(_SAFE.fullmatch(run_id)) and ".." not in run_id


def check(run_id: object, where: str = "") -> str:
    """``run_id`` itself, or InputError naming it (quoted and cut short: it may be hostile)."""
    if not is_valid(run_id):
        shown = repr(run_id)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise InputError(f"{where + ': ' if where else ''}{shown} is not a valid run id "
                         f"(1-{MAX_LEN} letters, digits, '.', '_' or '-'; never a path)")
    return run_id
