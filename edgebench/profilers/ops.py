"""Where the time goes: per-op time by phase, through the backend's op tracer (capability "ops").

Method
------
attach() switches the backend's tracer on (llama.cpp: a new context whose scheduler calls back
per graph node, see edgebench.backends.ggml_ctypes.NodeTracer); each phase() window tags the
nodes computed inside it with (phase, rep); nodes outside a window (cache reset, depth filling)
are not recorded. detach() switches tracing off and takes the events. The worker runs these reps
after, and apart from, the plain timing reps, so tracing never touches the throughput numbers.

Attribution. A node's time is its traced compute, from the end of the scheduler's "do you want
this node?" callback to the "node done" callback. Every computed node is seen, so op times sum to
100% of the traced compute time of a phase; raw shares are op time / that total.

Overhead, and its correction. Tracing makes every node its own launch (graph view, thread
fork/join, synchronize, a ctypes round trip) and breaks the CPU backend's RMS_NORM+MUL fusion
(the tracer files that MUL under "norm", where the fused kernel's time would fall). Two numbers:
  - op_launch_ns: the traced time of a node that does nothing. Right after each traced phase
    window the tracer times a chain of one-element ADDs through the same callback path with the
    case's thread count (events "launch/<phase>"); the median of a chain, its first nodes dropped
    (they may wait for a sleeping thread), is stored per (phase, rep). Measured in the state the
    phase left the machine in: on a VM the fork/join cost moves between regimes (here 1.5 and
    4.5 us) with the machine's load.
  - op_launch1_ns: the same for nodes ggml runs on one thread (GET_ROWS, SET_ROWS, SCALE, views:
    records.GGML_ONE_TASK_OPS): a traced node is its own graph, planned with its own task count,
    so these pay no thread fork/join; a chain of SCALEs measures them (events "launch1/<phase>").
  - overhead %: profiled / plain wall time of the same work - 1, computed on read by
    opstats.ops_summary from the profiled_ns samples and the plain reps of the same case.
Stalls. A launch may wait for a worker thread the OS put to sleep or preempted: milliseconds on a
busy machine, landing on whichever node runs. A node's typical time is the median over its
repeats: the same (name, op) in every decode step of every rep; in prefill, the same (name, op,
ubatch) in every rep, hence three profiled reps. op_typical_ns counts every node at that median.
Corrected op time = max(0, op_typical_ns - count * launch) per (phase, rep, op), with the phase's
median launch cost for the op's thread count (op_launch1_ns for one-task ops, else op_launch_ns);
what the max() clips is reported, never hidden; corrected shares renormalize to 100%. Computed on read by
edgebench.opstats from the raw samples stored here.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

from edgebench.profilers.base import Profiler
from edgebench.records import Sample

if TYPE_CHECKING:
    from edgebench.backends.base import Backend

LAUNCH_PHASE = "launch"  # events "launch/<phase>": the tracer's no-op launch probe after that phase
LAUNCH_METRICS = {LAUNCH_PHASE: "op_launch_ns", "launch1": "op_launch1_ns"}  # "launch1": one-task nodes
LAUNCH_WARM_IN = 8  # first probe nodes dropped: they may wait for a sleeping worker thread
TOP_NODES = 30  # named nodes stored per phase


class OpsProfiler(Profiler):
    name: ClassVar[str] = "ops"
    requires: ClassVar[frozenset[str]] = frozenset({"ops"})
    intrusive: ClassVar[bool] = True

    def reps_for(self, case) -> int:
        # Three reps: a node's median over its repeats then shrugs off a stall in one prefill.
        return max(1, min(case.reps, 3))

    def __init__(self) -> None:
        self._backend = None
        self._events: list = []

    def attach(self, backend: Backend) -> None:
        self._backend = backend
        backend.ops_begin()

    @contextmanager
    def phase(self, phase: str, rep: int) -> Iterator[None]:
        b = self._backend
        b.ops_mark(phase, rep)
        try:
            yield
        finally:
            b.ops_mark("", rep)

    def detach(self, backend: Backend) -> None:
        self._events = backend.ops_end()
        self._backend = None

    def collect(self) -> list[Sample]:
        events, self._events = self._events, []
        if not events:
            return []
        return _op_samples(events)


def _op_samples(events) -> list[Sample]:
    """op_ns / op_typical_ns / op_count per (phase, rep, "OP|class"), node_ns for the top nodes per
    phase and rep, op_launch_ns per launch probe (phase and rep of the window it followed)."""
    # A node's repeats: the executions of the same (name, op) at the same place in the phase
    # window of every rep (prefill: each ubatch is its own place) -- in decode, of every step too.
    runs: dict[tuple, list[tuple[int, int]]] = defaultdict(list)  # (phase, op, class, name, k) -> [(rep, ns)]
    seen: dict[tuple, int] = defaultdict(int)
    probes: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for e in events:
        kind, _, after = e.phase.partition("/")
        if kind in LAUNCH_METRICS:
            probes[(LAUNCH_METRICS[kind], after or "case", e.rep)].append(e.ns)
            continue
        k = 0
        if e.phase != "decode":
            k = seen[(e.phase, e.rep, e.op, e.name)]
            seen[(e.phase, e.rep, e.op, e.name)] = k + 1
        runs[(e.phase, e.op, e.op_class, e.name, k)].append((e.rep, e.ns))
    op_ns: dict[tuple, int] = defaultdict(int)
    op_typ: dict[tuple, float] = defaultdict(float)
    op_n: dict[tuple, int] = defaultdict(int)
    node: dict[tuple, int] = defaultdict(int)
    node_typ: dict[tuple, float] = defaultdict(float)
    for (phase, op, cls, name, _), xs in runs.items():
        # A node's typical time: the median over its repeats (decode steps, reps). Thread wake-ups
        # and preemption hit a few executions hard (milliseconds on a busy machine); the sum keeps
        # them (op_ns), count x median does not (op_typical_ns).
        typical = statistics.median(ns for _, ns in xs)
        label = f"{op}|{cls}"
        for rep, ns in xs:
            op_ns[(phase, rep, label)] += ns
            op_typ[(phase, rep, label)] += typical
            op_n[(phase, rep, label)] += 1
            node[(phase, rep, name)] += ns
            node_typ[(phase, name)] += typical
    out = [Sample(rep, phase, "op_ns", ns, label=label) for (phase, rep, label), ns in op_ns.items()]
    out += [Sample(rep, phase, "op_typical_ns", ns, label=label) for (phase, rep, label), ns in op_typ.items()]
    out += [Sample(rep, phase, "op_count", n, label=label) for (phase, rep, label), n in op_n.items()]
    top: dict[str, list[str]] = defaultdict(list)
    for (phase, name), _ in sorted(node_typ.items(), key=lambda kv: -kv[1]):
        if len(top[phase]) < TOP_NODES:
            top[phase].append(name)
    for phase, names in top.items():
        rank = {n: i for i, n in enumerate(names)}
        out += [Sample(rep, ph, "node_ns", ns, idx=rank[name], label=name)
                for (ph, rep, name), ns in node.items() if ph == phase and name in rank]
    for (metric, phase, rep), ns in sorted(probes.items()):
        kept = ns[LAUNCH_WARM_IN:] if len(ns) > 2 * LAUNCH_WARM_IN else ns
        out.append(Sample(rep, phase, metric, float(statistics.median(kept))))
    return out
