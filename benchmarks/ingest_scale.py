"""How long a fleet's results take to come home: ingest 1, 10 and 100 run bundles into one store.

One real bundle is measured first (the fake backend, 4 cases x 5 reps x 128 decode steps: the raw
samples of a small sweep), then copied under distinct run ids, N at a time, into a fresh store and
ingested with edgebench.store.bundle.ingest_bundle, as `fleet run` does after fetching. Prints the
wall time per N, per bundle and per sample row. Run by hand:

    python3 benchmarks/ingest_scale.py [--store URL] [--counts 1,10,100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_bundle(work: Path) -> Path:
    model = work / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 5, "decode_us": 100}))
    subprocess.run([sys.executable, "-m", "edgebench.cli", "run", "-m", str(model), "--backend", "fake", "-p", "64,128",
                    "-t", "1,2", "-n", "128", "-r", "5", "--no-report", "-o", str(work / "src")],
                   check=True, capture_output=True)
    (run_dir,) = [d for d in (work / "src").iterdir() if (d / "run.json").is_file()]
    return run_dir


def copies(src: Path, dest: Path, n: int, tag: str) -> list[Path]:
    doc = json.loads((src / "run.json").read_text())
    samples = (src / "samples.csv").read_text().splitlines(keepends=True)
    out = []
    for i in range(n):
        run_id = f"{doc['run_id']}-{tag}{i:03d}"
        d = dest / run_id
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps(doc | {"run_id": run_id}))
        (d / "samples.csv").write_text(samples[0] + "".join(run_id + line[line.index(","):] for line in samples[1:]))
        shutil.copy(src / "summary.csv", d / "summary.csv")
        out.append(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="database URL (default: a fresh SQLite file per N)")
    ap.add_argument("--counts", default="1,10,100")
    a = ap.parse_args()
    from edgebench.store.bundle import ingest_bundle
    from edgebench.store.database import Store

    with tempfile.TemporaryDirectory(prefix="edgebench-ingest-") as tmp:
        work = Path(tmp)
        src = make_bundle(work)
        rows = sum(1 for _ in open(src / "samples.csv")) - 1
        cases = len(json.loads((src / "run.json").read_text())["cases"])
        print(f"bundle: {cases} cases, {rows} sample rows, {sum(f.stat().st_size for f in src.iterdir() if f.is_file()) / 1e6:.2f} MB")
        print(f"{'bundles':>8} {'total s':>9} {'ms/bundle':>10} {'us/row':>8}")
        for n in (int(c) for c in a.counts.split(",")):
            dirs = copies(src, work / f"n{n}", n, f"n{n}-")
            store = Store(a.store or work / f"store-{n}")
            t0 = time.perf_counter()
            for d in dirs:
                ingest_bundle(store, d)
            dt = time.perf_counter() - t0
            print(f"{n:>8} {dt:>9.2f} {1000 * dt / n:>10.1f} {1e6 * dt / (n * rows):>8.1f}")
            store.engine.dispose()


if __name__ == "__main__":
    main()
