"""Runs ON THE BOARD (copied there by playbook.yml; the board's python3 and its standard library
only, nothing of edgebench is importable here).

    python3 on_board.py lock LOCKFILE --owner FLEET_ID [--timeout S] [-- COMMAND ...]
    python3 on_board.py pack OUT_DIR BUNDLE.tar

lock: one benchmark at a time per device. Takes an exclusive, non-blocking flock on LOCKFILE
(released by the kernel however this process ends, so a crashed run never leaves a stale lock),
runs COMMAND in its own process group and exits with its code; without COMMAND it only checks the
lock is free. Exit 75: busy (another fleet run holds the lock; its owner on stderr); 124: COMMAND
ran past --timeout (its whole process group killed).

pack: the run folder `edgebench run -o OUT_DIR` wrote (run.json, summary.csv, samples.csv, ops.csv)
as one tar, <run_id>/<file>, so the controller fetches one file per board.
"""

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

EXIT_BUSY = 75
EXIT_TIMEOUT = 124
BUNDLE_FILES = ("run.json", "summary.csv", "samples.csv", "ops.csv")


def lock(argv):
    ap = argparse.ArgumentParser(prog="on_board.py lock")
    ap.add_argument("lockfile")
    ap.add_argument("--owner", default="?")
    ap.add_argument("--timeout", type=float, default=None)
    cut = argv.index("--") if "--" in argv else len(argv)
    a, cmd = ap.parse_args(argv[:cut]), argv[cut + 1:]
    fd = os.open(a.lockfile, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except ValueError:
            holder = {}
        since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
        sys.stderr.write(f"busy: fleet {holder.get('owner', '?')} (pid {holder.get('pid', '?')}) measures "
                         f"on this device since {since}\n")
        return EXIT_BUSY
    if not cmd:
        return 0
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"owner": a.owner, "pid": os.getpid(), "since": time.time(), "command": cmd}).encode(), 0)
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait(timeout=a.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sys.stderr.write(f"timed out: the sweep was still running after {a.timeout:g} s and was stopped\n")
        return EXIT_TIMEOUT


def pack(argv):
    out_dir, bundle = argv
    runs = sorted(root for root, _, files in os.walk(out_dir) if "run.json" in files)
    if len(runs) != 1:
        sys.stderr.write(f"expected one run folder under {out_dir}, found {len(runs)}\n")
        return 1
    run_dir = runs[0]
    with tarfile.open(bundle + ".tmp", "w") as tar:
        for name in BUNDLE_FILES:
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                tar.add(path, arcname=os.path.basename(run_dir) + "/" + name)
    os.replace(bundle + ".tmp", bundle)
    print(os.path.basename(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit({"lock": lock, "pack": pack}[sys.argv[1]](sys.argv[2:]))
