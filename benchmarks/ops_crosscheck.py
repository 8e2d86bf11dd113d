"""Cross-check the ops profiler's shares against an independent method: sampling native stacks.

Method A (edgebench): the ops profiler (per-node times through the scheduler callback), raw and
launch-corrected shares per class, as `edgebench run --profile ops` stores them.
Method B (perf): the same work on a plain context (no callback), sampled by
`perf record -e cpu-clock --call-graph dwarf` on every thread of this process, only while the
phase runs (perf's control fifo switches sampling on and off). Each sample's stack is mapped to an
op class by its innermost ggml op frame: ggml_compute_forward_<op> (or a repack / llamafile
matmul kernel: mul_mat), then the classes of edgebench.ops_taxonomy. Samples without an op frame
are "sync" (threads spinning in a barrier or the OpenMP runtime) or "outside" (Python, graph
building, logits copy); they are left out of the shares, as method A observes op time only.
Wheels strip local symbols and some ops tail-jump into static kernels (ROPE does), so anonymous
frames of libggml-cpu take the class of the exported op function that calls them (StaticOps:
.eh_frame ranges from readelf, call/jmp edges from objdump).

mul_mat and mul_mat_vec are compared as one class "mul_mat*": a stack cannot tell whether the
activation had one column (prefill computes its last layer's FFN and the output for one token).

Prints, per phase, each class's share by both methods and the absolute difference in percentage
points. Needs `perf` (Debian: apt-get install linux-perf), binutils (readelf, objdump, nm) and
permission to profile this process.

    python benchmarks/ops_crosscheck.py --quant Q4_K_M
    python benchmarks/ops_crosscheck.py --model my.gguf -p 128 -n 64 -r 3 --perf-reps 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from edgebench.analysis import ops as opstats
from edgebench.backends.op_classes import classify_ggml
from edgebench.records import OP_CLASSES, Case

CMP_CLASSES = ("mul_mat*",) + tuple(c for c in OP_CLASSES if c not in ("mul_mat", "mul_mat_vec"))
_FWD = "ggml_compute_forward_"
_MATMUL_MARKS = ("mul_mat", "gemv", "gemm", "sgemm", "tinyBLAS", "repack::", "llamafile")


def frame_class(sym: str) -> str | None:
    """Op class of one stack frame's symbol, or None when the frame is not an op's."""
    if any(m in sym for m in _MATMUL_MARKS):
        return "mul_mat*"
    if not sym.startswith(_FWD):
        return None
    # ggml_compute_forward_<op>[_variant]: the longest prefix of the name that is a ggml op
    # (rms_norm_mul_fused -> RMS_NORM, add_non_quantized -> ADD, flash_attn_ext -> FLASH_ATTN_EXT).
    parts = sym[len(_FWD):].split("(")[0].strip().upper().split("_")
    for n in range(len(parts), 0, -1):
        c = classify_ggml("_".join(parts[:n]), 0)
        if c != "other":
            return "mul_mat*" if c in ("mul_mat", "mul_mat_vec") else c
    return "other"


class StaticOps:
    """Op classes for the anonymous functions of a stripped libggml-cpu.

    Release wheels strip local symbols, and ggml_compute_forward_<op> often tail-jumps into a
    static kernel (ROPE does), so that op's frame never shows in a stack. Function ranges come
    from .eh_frame (readelf), direct call/jmp edges from the disassembly (objdump); every static
    function reached from one exported op function (or matmul kernel) takes its class, one reached
    from two classes takes none.
    """

    def __init__(self, lib: Path) -> None:
        import bisect
        import re

        self._bisect = bisect.bisect_right
        frames = subprocess.run(["readelf", "--debug-dump=frames", str(lib)], capture_output=True, text=True).stdout
        ranges = sorted({(int(a, 16), int(b, 16)) for a, b in re.findall(r"pc=([0-9a-f]+)\.\.([0-9a-f]+)", frames)})
        self.starts = [a for a, _ in ranges]
        self.ends = [b for _, b in ranges]
        names: dict[int, str] = {}
        nm = subprocess.run(["nm", "-D", "-C", "--defined-only", str(lib)], capture_output=True, text=True).stdout
        for line in nm.splitlines():
            parts = line.split(maxsplit=2)
            if len(parts) == 3 and parts[1] in "TtWw":
                names[int(parts[0], 16)] = parts[2]
        edges: dict[int, set[int]] = {}
        insn = re.compile(r"^\s*([0-9a-f]+):\s+(?:call|jmp)\w*\s+([0-9a-f]+) <")
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True).stdout
        for line in dis.splitlines():
            m = insn.match(line)
            if m:
                src, dst = self._func(int(m[1], 16)), self._func(int(m[2], 16))
                if src is not None and dst is not None and src != dst:
                    edges.setdefault(src, set()).add(dst)
        self.label: dict[int, str | None] = {}
        for start, name in names.items():
            cls = frame_class(name)
            root = self._func(start)
            if not cls or root is None:
                continue
            todo, seen = [(root, 0)], {root}
            while todo:
                f, depth = todo.pop()
                for g in edges.get(f, ()):
                    if g in seen or g in names or depth >= 4:
                        continue
                    seen.add(g)
                    self.label[g] = cls if self.label.get(g, cls) == cls else None
                    todo.append((g, depth + 1))

    def _func(self, addr: int) -> int | None:
        i = self._bisect(self.starts, addr) - 1
        return self.starts[i] if i >= 0 and addr < self.ends[i] else None

    def classify(self, addr: int) -> str | None:
        f = self._func(addr)
        return self.label.get(f) if f is not None else None


def stack_class(frames: list[tuple[str, str, int]], static: StaticOps | None = None) -> str:
    """Class of a sample from its (symbol, dso, address) frames, innermost first."""
    for sym, dso, addr in frames:
        c = frame_class(sym)
        if c is None and static is not None and sym == "[unknown]" and "libggml-cpu" in dso:
            c = static.classify(addr)
        if c:
            return c
    # No op frame: a compute thread between ops (barrier spin, OpenMP team wait) is "sync".
    if any("libgomp" in dso or "GOMP_" in sym or "ggml_graph_compute" in sym or "ggml_barrier" in sym
           for sym, dso, _ in frames):
        return "sync"
    return "outside"


def parse_perf_script(text: str, static: StaticOps | None = None) -> Counter:
    """Samples per class from `perf script -F tid,ip,sym,dso` output: a header line per sample,
    then one tab-indented "address symbol (dso)" line per frame (innermost first), a blank line."""
    out: Counter = Counter()
    frames: list[tuple[str, str, int]] | None = None
    for line in text.splitlines() + [""]:
        if line.startswith("\t"):
            parts = line.split(maxsplit=1)
            if frames is not None and len(parts) > 1:
                sym, _, dso = parts[1].rpartition(" (")
                try:
                    addr = int(parts[0], 16)
                except ValueError:
                    addr = -1
                frames.append((sym, dso.rstrip(")"), addr) if sym else (parts[1], "", addr))
        elif line.strip():
            frames = []
        elif frames is not None:
            out[stack_class(frames, static)] += 1
            frames = None
    return out


class PerfSession:
    """`perf record` attached to this process, sampling only between enable() and disable()."""

    def __init__(self, out: Path, freq: int, stack_bytes: int) -> None:
        self.dir = out.parent
        self.data = out
        ctl, ack = self.dir / f"{out.stem}.ctl", self.dir / f"{out.stem}.ack"
        for f in (ctl, ack):
            os.mkfifo(f)
        self.proc = subprocess.Popen(
            ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(freq), f"--call-graph=dwarf,{stack_bytes}",
             "-D", "-1", f"--control=fifo:{ctl},{ack}", "-p", str(os.getpid()), "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._ctl = open(ctl, "w")  # blocks until perf opens its end
        self._ack = open(ack)

    def _cmd(self, c: str) -> None:
        self._ctl.write(c + "\n")
        self._ctl.flush()
        self._ack.readline()

    def enable(self) -> None:
        self._cmd("enable")

    def disable(self) -> None:
        self._cmd("disable")

    def finish(self, static: StaticOps | None = None) -> Counter:
        self._ctl.close()
        self._ack.close()
        self.proc.send_signal(2)
        _, err = self.proc.communicate(timeout=120)
        if self.proc.returncode not in (0, -2, 130):
            raise RuntimeError(f"perf record failed: {err.decode(errors='replace')[-500:]}")
        txt = subprocess.run(["perf", "script", "-i", str(self.data), "-F", "tid,ip,sym,dso", "--no-inline"],
                             capture_output=True, text=True, check=True).stdout
        return parse_perf_script(txt, static)


def perf_shares(backend, case: Case, reps: int, freq: int, stack_bytes: int, work: Path, rng) -> dict:
    """{phase: (shares over op samples, counts incl. sync/outside)} for plain (untraced) reps."""
    n_vocab = backend.n_vocab
    import llama_cpp

    static = StaticOps(Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so")
    out = {}
    for phase in ("prefill", "decode"):
        s = PerfSession(work / f"{phase}.data", freq, stack_bytes)
        for _ in range(reps):
            backend.reset()
            prompt = rng.integers(0, n_vocab, case.n_prompt).tolist()
            gen = rng.integers(0, n_vocab, case.n_gen).tolist()
            if phase == "prefill":
                s.enable()
            backend.prefill(prompt)
            if phase == "prefill":
                s.disable()
            else:
                s.enable()
                for tok in gen:
                    backend.decode_step(tok)
                s.disable()
        counts = s.finish(static)
        ops = {c: counts.get(c, 0) for c in CMP_CLASSES}
        n = sum(ops.values())
        out[phase] = ({c: v / n for c, v in ops.items()} if n else {}, counts)
    return out


def tracer_shares(backend, case: Case, reps: int, rng) -> tuple[dict, dict, dict]:
    """(corrected, raw) class shares from the ops profiler, and its summary."""
    from edgebench.profilers.ops import OpsProfiler
    from edgebench.run.worker import _measure_rep

    plain_pre, plain_steps = _measure_rep(backend, case, rng, backend.n_vocab, [], 0)  # untraced reference
    p = OpsProfiler()
    p.attach(backend)
    walls: list = []
    for rep in range(reps):
        backend.reset()
        prompt = rng.integers(0, backend.n_vocab, case.n_prompt).tolist()
        gen = rng.integers(0, backend.n_vocab, case.n_gen).tolist()
        with p.phase("prefill", rep):
            t0 = time.perf_counter_ns()
            backend.prefill(prompt)
            walls.append(("prefill", rep, time.perf_counter_ns() - t0))
        with p.phase("decode", rep):
            t0 = time.perf_counter_ns()
            for tok in gen:
                backend.decode_step(tok)
            walls.append(("decode", rep, time.perf_counter_ns() - t0))
    p.detach(backend)
    df = pd.DataFrame([s.to_dict() for s in p.collect()])
    cor, raw = opstats.class_shares(df, True), opstats.class_shares(df, False)

    def merge(d):
        return {ph: {c: sum(v for k, v in sh.items() if (k in ("mul_mat", "mul_mat_vec") and c == "mul_mat*") or k == c)
                     for c in CMP_CLASSES} for ph, sh in d.items()}

    profiled = sum(np.mean([ns for ph, _, ns in walls if ph == phase]) for phase in ("prefill", "decode"))
    summary = {"ops_overhead_pct": opstats.overhead_pct(profiled, plain_pre + sum(plain_steps))}
    summary.update({f"launch_ns_{ph}": opstats.launch_ns(df, ph) for ph in ("prefill", "decode")})
    return merge(cor), merge(raw), summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="GGUF file (default: the smollm-135m preset at --quant, built if needed)")
    ap.add_argument("--preset", default="smollm-135m")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-r", "--reps", type=int, default=3, help="profiled reps (method A)")
    ap.add_argument("--perf-reps", type=int, default=10, help="sampled reps (method B)")
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("-F", "--freq", type=int, default=1999, help="perf sampling frequency, Hz")
    ap.add_argument("--stack-bytes", type=int, default=4096, help="user stack copied per sample for DWARF unwinding")
    args = ap.parse_args()
    if not shutil.which("perf"):
        print("perf not found (Debian: apt-get install -y linux-perf)", file=sys.stderr)
        return 2
    if not args.model:
        from edgebench.models import synth_gguf

        args.model = str(synth_gguf.ensure_model(args.preset, args.quant))
    if not args.threads:
        from edgebench.machine.environment import physical_cores

        args.threads = physical_cores()
    from edgebench.backends.llama_cpp import LlamaCppBackend

    case = Case(backend="llama-cpp", model=args.model, n_prompt=args.n_prompt, n_gen=args.n_gen,
                n_threads=args.threads, reps=args.reps)
    backend = LlamaCppBackend()
    info = backend.load(case)
    rng = np.random.default_rng(0)
    backend.reset()
    backend.prefill(rng.integers(0, info.n_vocab, case.n_prompt).tolist())  # warmup
    backend.decode_step(1)
    with tempfile.TemporaryDirectory(prefix="edgebench-perf-") as d:
        perf = perf_shares(backend, case, args.perf_reps, args.freq, args.stack_bytes, Path(d), rng)
    cor, raw, summary = tracer_shares(backend, case, args.reps, rng)
    backend.close()

    print(f"\n{Path(args.model).name}  quant={info.quant}  p={case.n_prompt} n={case.n_gen} t={case.n_threads}"
          f"  tracer reps={args.reps}  perf reps={args.perf_reps} @ {args.freq} Hz")
    print(f"ops profiler: overhead {summary.get('ops_overhead_pct') or float('nan'):.1f}% (vs one plain rep of the same work);"
          f" launch cost {summary['launch_ns_prefill'] / 1e3:.2f} us (prefill), {summary['launch_ns_decode'] / 1e3:.2f} us (decode)")
    for phase in ("prefill", "decode"):
        ps, counts = perf[phase]
        n_all = sum(counts.values())
        n_ops = sum(counts.get(c, 0) for c in CMP_CLASSES)
        print(f"\n[{phase}] perf samples: {n_all} ({n_ops} in ops, sync {counts.get('sync', 0) / max(n_all, 1):.1%},"
              f" outside ops {counts.get('outside', 0) / max(n_all, 1):.1%})")
        print(f"  {'class':12s} {'perf %':>8s} {'raw %':>8s} {'corr %':>8s} {'|raw-perf| pp':>14s} {'|corr-perf| pp':>15s}")
        worst_raw = worst_cor = 0.0
        for c in CMP_CLASSES:
            pv, rv, cv = ps.get(c, 0) * 100, raw.get(phase, {}).get(c, 0) * 100, cor.get(phase, {}).get(c, 0) * 100
            if max(pv, rv, cv) < 0.05:
                continue
            worst_raw, worst_cor = max(worst_raw, abs(rv - pv)), max(worst_cor, abs(cv - pv))
            print(f"  {c:12s} {pv:8.1f} {rv:8.1f} {cv:8.1f} {abs(rv - pv):14.1f} {abs(cv - pv):15.1f}")
        print(f"  largest difference: raw {worst_raw:.1f} pp, corrected {worst_cor:.1f} pp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
