"""Soak: N fake-backend cases in one `edgebench run` (in this process), parent RSS sampled after
every case; prints the growth per case. The parent should not grow with the number of cases: a
fleet device runs sweeps of hundreds of cases in one process.

    python3 benchmarks/soak.py -N 300

Growth is the slope of a least-squares line through the RSS samples after the first 10% of cases
(imports, caches and the first allocations settle there), in bytes per case.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-N", "--cases", type=int, default=300)
    ap.add_argument("--trace", action="store_true", help="tracemalloc: print where the growth is allocated")
    args = ap.parse_args()
    if args.trace:
        import tracemalloc

        tracemalloc.start(8)
    snaps = []

    from edgebench.run import session

    samples: list[int] = []
    end = session.ProgressEvents.case_end

    def case_end(self, i, status, error):
        end(self, i, status, error)
        samples.append(rss_bytes())
        if args.trace and i in (args.cases // 5, args.cases - 1):
            snaps.append(tracemalloc.take_snapshot())

    session.ProgressEvents.case_end = case_end
    with tempfile.TemporaryDirectory() as d:
        model = Path(d) / "soak.fake"
        model.write_text(json.dumps({"prefill_us_per_token": 1, "decode_us": 10}))
        prompts = ",".join(str(i) for i in range(1, args.cases + 1))  # one case per prompt length
        options = dict(models=[str(model)], backends="fake", reps=1, n_prompt=[prompts], n_gen=["2"],
                       threads=["1"], warmup=False)
        outcome = session.start(options, None, Path(d) / "out")
    skip = max(1, len(samples) // 10)
    xs, ys = list(range(skip, len(samples))), samples[skip:]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
    print(f"cases {len(samples)} (exit {outcome.code}); parent RSS first {samples[0] / 2**20:.1f} MiB, "
          f"last {samples[-1] / 2**20:.1f} MiB; growth {slope / 1024:.2f} KiB/case "
          f"(least squares over cases {skip}..{len(samples) - 1})")
    if len(snaps) == 2:
        for stat in snaps[1].compare_to(snaps[0], "traceback")[:5]:
            print(f"{stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks:")
            print("\n".join("    " + line for line in stat.traceback.format()[-8:]))


if __name__ == "__main__":
    main()
