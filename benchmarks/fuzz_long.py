"""The fuzz properties of tests/test_fuzz.py with many more examples (random, not the suite's fixed
seed): every reader of untrusted input either accepts an input or rejects it with a short
one-line InputError. Run by hand or nightly; prints each property's result and the time taken.

    python3 benchmarks/fuzz_long.py            # 2000 examples per property
    python3 benchmarks/fuzz_long.py 20000 -k gguf
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    examples = argv[0] if argv and argv[0].isdigit() else "2000"
    rest = argv[1:] if argv and argv[0].isdigit() else argv
    env = dict(os.environ, EDGEBENCH_FUZZ_EXAMPLES=examples)
    t0 = time.monotonic()
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                          "--tb=short", str(ROOT / "tests" / "test_fuzz.py"), *rest], env=env, cwd=ROOT)
    print(f"fuzz_long: {examples} examples per property, {time.monotonic() - t0:.0f} s, "
          f"{'no crash found' if rc == 0 else 'FAILURES above (hypothesis printed the smallest input)'}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
