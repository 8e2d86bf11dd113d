"""Per-device-class regression gates: `compare --baseline-dir baselines/ CANDIDATE`.

baselines/<device profile>/ holds the accepted run folder of that device class (run.json,
samples.csv, summary.csv, as the CI gate in the README keeps them). Each candidate run is compared
with the baseline of its own device profile; a baseline whose run.json names another device is
refused, never compared across classes. CANDIDATE: a fleet id (every run that fleet ingested), a
run id or a run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgebench.analysis import compare as cmp
from edgebench.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, InputError


@dataclass
class DeviceVerdict:
    device: str
    candidate: str   # run id or folder
    baseline: Path
    result: cmp.Result


def _baseline_for(base_dir: Path, device: str) -> Path:
    d = base_dir / device
    if not (d / "run.json").is_file():
        have = sorted(p.name for p in base_dir.iterdir() if (p / "run.json").is_file()) if base_dir.is_dir() else []
        raise InputError(f"no baseline for device {device} in {base_dir} (expected {d}/run.json; "
                         f"baselines here: {', '.join(have) or 'none'})")
    try:
        recorded = json.loads((d / "run.json").read_text()).get("device")
    except (OSError, ValueError) as e:
        raise InputError(f"baseline {d}: unreadable run.json: {e}") from None
    if recorded != device:
        raise InputError(f"baseline {d} was measured on {recorded}, not {device}: a baseline from another "
                         f"device class is refused")
    return d


def _candidates(candidate: str, store: str | Path) -> list[tuple[str, str]]:
    """-> [(device, run id or folder)] of CANDIDATE."""
    p = Path(candidate)
    if (p / "run.json").is_file():
        return [(str(json.loads((p / "run.json").read_text()).get("device")), str(p))]
    from edgebench.store.database import Store

    st = Store(store, create=False)
    fleet = [r for r in st.list_runs() if ((r.env or {}).get("fleet") or {}).get("fleet_id") == candidate]
    if fleet:
        return [(r.device, r.run_id) for r in fleet]
    run = st.get_run(candidate)
    return [(run.device, run.run_id)]


def compare_by_device(base_dir: Path, candidate: str, store: str | Path, opts: cmp.Options) -> list[DeviceVerdict]:
    """Every candidate run against its own device's baseline. Any candidate device without a
    baseline, or a baseline from another class, is bad input before anything is compared."""
    if opts.force:
        raise InputError("--baseline-dir matches each device with its own baseline; --force does not apply")
    pairs = [(dev, cand, _baseline_for(Path(base_dir), dev)) for dev, cand in _candidates(candidate, store)]
    return [DeviceVerdict(dev, cand, base, cmp.compare(str(base), cand, store, opts)) for dev, cand, base in pairs]


def exit_code(verdicts: list[DeviceVerdict]) -> int:
    """3 when any device regressed, else 4 when any was inconclusive, else 0."""
    codes = {v.result.exit_code for v in verdicts}
    return EXIT_REGRESSION if EXIT_REGRESSION in codes else EXIT_INCONCLUSIVE if EXIT_INCONCLUSIVE in codes else EXIT_OK
