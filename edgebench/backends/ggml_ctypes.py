"""Reading ggml graph nodes from Python: the bundled libggml-base and the `struct ggml_tensor` layout.

The op tracer (LlamaCppBackend.ops_begin) receives bare `struct ggml_tensor *` pointers from the
scheduler's eval callback. Op names come from ggml itself (``ggml_op_desc``: the unary / GLU op
name for UNARY / GLU nodes, else the op name), never from enum numbers, which change between
ggml versions. Node names and shapes are read from the struct at offsets given by the ctypes
mirror below, written from ggml/include/ggml.h of the llama.cpp vendored by llama-cpp-python
0.3.36. ``GgmlLib()`` checks that mirror against the running library before any model tensor is
read (size from ggml_tensor_overhead, name offset from ggml_get_name, ne / src offsets on a probe
MUL_MAT built with ggml itself) and raises ``GgmlLayoutError`` when they disagree, so a
llama-cpp-python upgrade that moves fields fails loudly instead of reading garbage.
"""

from __future__ import annotations

import ctypes
from ctypes import c_bool, c_char, c_char_p, c_int, c_int32, c_int64, c_size_t, c_void_p
from pathlib import Path

GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_OP_PARAMS = 64
GGML_MAX_NAME = 64
# ggml_tensor_overhead() = sizeof(struct ggml_object) + sizeof(struct ggml_tensor) (ggml.c); the object
# is offs, size, next, type + padding[4]: 32 bytes on 64-bit.
_GGML_OBJECT_SIZE = 32

# ggml's no-op view ops: the CPU backend skips them (ggml_op_is_empty in ggml-impl.h), so the
# traced time of such a node is the pure cost of one launch through the callback path.
NOOP_OPS: frozenset[str] = frozenset({"NONE", "VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"})


class GgmlTensor(ctypes.Structure):
    """Mirror of `struct ggml_tensor` (ggml.h, ggml 0.25.x as bundled with llama-cpp-python 0.3.36)."""

    _fields_ = [
        ("type", c_int),
        ("buffer", c_void_p),
        ("ne", c_int64 * GGML_MAX_DIMS),
        ("nb", c_size_t * GGML_MAX_DIMS),
        ("op", c_int),
        ("op_params", c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", c_int32),
        ("src", c_void_p * GGML_MAX_SRC),
        ("view_src", c_void_p),
        ("view_offs", c_size_t),
        ("data", c_void_p),
        ("name", c_char * GGML_MAX_NAME),
        ("extra", c_void_p),
        ("padding", c_char * 8),
    ]


OFF_NE = GgmlTensor.ne.offset
OFF_SRC = GgmlTensor.src.offset
OFF_NAME = GgmlTensor.name.offset
PTR_SIZE = ctypes.sizeof(c_void_p)


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", c_size_t), ("mem_buffer", c_void_p), ("no_alloc", c_bool)]


class GgmlLayoutError(RuntimeError):
    """The running ggml does not match the struct layout this module was written for."""


def _bundled(stem: str) -> ctypes.CDLL | None:
    """A ggml library shipped inside llama_cpp/lib (the one llama.cpp itself runs on), or None."""
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    for fname in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
        if (lib_dir / fname).exists():
            return ctypes.CDLL(str(lib_dir / fname))
    return None


class GgmlLib:
    """The few libggml-base functions the tracer needs, with argtypes/restype set, checked on load.

    ``op_desc(tensor_ptr) -> int`` returns the address of a static C string (cache it by address;
    ``string_at`` it once); ``name_of(tensor_ptr) -> bytes`` reads the node name.
    """

    def __init__(self) -> None:
        base = _bundled("ggml-base")
        if base is None:  # fall back on llama_cpp's own handle (libggml pulls in libggml-base)
            from llama_cpp import _ggml

            base = _ggml.libggml
        self.lib = base
        f = base.ggml_op_desc
        f.argtypes, f.restype = [c_void_p], c_void_p
        self.op_desc = f
        f = base.ggml_get_name
        f.argtypes, f.restype = [c_void_p], c_void_p
        self.get_name = f
        f = base.ggml_tensor_overhead
        f.argtypes, f.restype = [], c_size_t
        self.tensor_overhead = f
        self._desc_cache: dict[int, str] = {}
        self.check_layout()

    def desc_str(self, addr: int) -> str:
        """The op name behind an address returned by op_desc (cached)."""
        s = self._desc_cache.get(addr)
        if s is None:
            s = self._desc_cache[addr] = ctypes.string_at(addr).decode()
        return s

    @staticmethod
    def name_of(tensor: int) -> bytes:
        return ctypes.string_at(tensor + OFF_NAME)

    def check_layout(self) -> None:
        """Build ``probe = mul_mat(w[5x3], x[5x7])`` with ggml and read it back through the mirror."""
        size = self.tensor_overhead() - _GGML_OBJECT_SIZE
        if size != ctypes.sizeof(GgmlTensor):
            raise GgmlLayoutError(f"sizeof(struct ggml_tensor) is {size}, the mirror has {ctypes.sizeof(GgmlTensor)}")
        L = self.lib
        L.ggml_init.argtypes, L.ggml_init.restype = [_InitParams], c_void_p
        L.ggml_free.argtypes, L.ggml_free.restype = [c_void_p], None
        L.ggml_new_tensor_2d.argtypes = [c_void_p, c_int, c_int64, c_int64]
        L.ggml_new_tensor_2d.restype = c_void_p
        L.ggml_mul_mat.argtypes, L.ggml_mul_mat.restype = [c_void_p, c_void_p, c_void_p], c_void_p
        L.ggml_set_name.argtypes, L.ggml_set_name.restype = [c_void_p, c_char_p], c_void_p
        import llama_cpp

        ctx = L.ggml_init(_InitParams(16 * self.tensor_overhead(), None, True))
        if not ctx:
            raise GgmlLayoutError("ggml_init failed for the layout probe")
        try:
            f32 = llama_cpp.GGML_TYPE_F32
            w = L.ggml_new_tensor_2d(ctx, f32, 5, 3)
            x = L.ggml_new_tensor_2d(ctx, f32, 5, 7)
            y = L.ggml_mul_mat(ctx, w, x)
            L.ggml_set_name(y, b"edgebench-probe")
            t = GgmlTensor.from_address(y)
            problems = []
            if self.get_name(y) != y + OFF_NAME or self.name_of(y) != b"edgebench-probe":
                problems.append("name")
            if tuple(t.ne) != (3, 7, 1, 1):
                problems.append(f"ne={tuple(t.ne)}")
            if t.src[0] != w or t.src[1] != x:
                problems.append("src")
            if self.desc_str(self.op_desc(y)) != "MUL_MAT":
                problems.append("op")
            if problems:
                raise GgmlLayoutError(f"struct ggml_tensor layout mismatch ({', '.join(problems)})")
        finally:
            L.ggml_free(ctx)


# Per-node kinds the callback tells apart (what else it needs to read from the node).
_K_OTHER, _K_MATMUL, _K_MATMUL_ID, _K_MUL, _K_RMS_NORM = range(5)
_KIND_OF = {"MUL_MAT": _K_MATMUL, "OUT_PROD": _K_MATMUL, "MUL_MAT_ID": _K_MATMUL_ID,
            "MUL": _K_MUL, "RMS_NORM": _K_RMS_NORM}


class NodeTracer:
    """Times every graph node through ggml_backend_sched's eval callback.

    How the scheduler calls back (ggml-backend.cpp, ggml_backend_sched_compute_splits): for each
    node it asks ``cb(t, ask=True)``; nodes nobody wants are batched with the next one; once a node
    is wanted, the run of nodes up to it is computed (ggml_backend_graph_compute_async on a graph
    view), the backend synchronizes, then ``cb(t, ask=False)`` says the node is done. Answering
    True to every ask makes every node its own launch, so a node's time is
    ``perf_counter_ns at notify - perf_counter_ns at the end of its ask``: its compute plus one
    launch (graph view, CPU plan, thread fork/join, synchronize, the ctypes return/entry). The Python
    work of the callbacks themselves lies between those intervals and is not attributed to any node.
    Every computed node is observed, so the node times sum to 100% of the observed compute time.

    Outside a marked phase (``mark("", ...)``: untimed cache filling, warmup) asks are answered
    False: the split is computed in one launch, untraced.

    The callback stores raw tuples (ns, op-desc address, node name, x) and nothing else; ``x`` is the
    activation's column count for matrix multiplies, and 1 for a MUL that consumes the RMS_NORM just
    before it (the norm weight: the CPU backend fuses that pair into one kernel when untraced, so the
    tracer files the MUL under "norm").
    """

    def __init__(self, ggml: GgmlLib, callback_type) -> None:
        self.ggml = ggml
        self.raw: list[tuple[int, int, bytes, int]] = []
        self.marks: list[tuple[int, str, int]] = []  # (index into raw, phase, rep)
        # [t_ask_ns, previous node, previous kind, recording]: a list is the cheapest mutable cell
        self._st: list = [0, 0, _K_OTHER, False]
        self.error: str | None = None  # first exception inside the callback (events() raises it)
        self.callback = callback_type(self._make_callback())  # referenced as long as the tracer lives

    def mark(self, phase: str, rep: int) -> None:
        """Following nodes belong to (phase, rep); an empty phase stops recording."""
        self.marks.append((len(self.raw), phase, rep))
        st = self._st
        st[1], st[2], st[3] = 0, _K_OTHER, bool(phase)

    def _make_callback(self):
        import time

        clock = time.perf_counter_ns
        st, append = self._st, self.raw.append
        op_desc, string_at = self.ggml.op_desc, ctypes.string_at
        desc_str = self.ggml.desc_str
        ptr, i64 = c_void_p.from_address, c_int64.from_address
        name_off, src0_off, src1_off = OFF_NAME, OFF_SRC, OFF_SRC + PTR_SIZE
        ne1_off, ne2_off = OFF_NE + 8, OFF_NE + 16
        kinds: dict[int, int] = {}

        def cb(t, ask, _user_data):
            if ask:
                if not st[3]:
                    return False
                st[0] = clock()
                return True
            t1 = clock()
            try:
                d = op_desc(t)
                k = kinds.get(d)
                if k is None:
                    k = kinds[d] = _KIND_OF.get(desc_str(d), _K_OTHER)
                x = 0
                if k == _K_MATMUL:
                    x = i64(ptr(t + src1_off).value + ne1_off).value
                elif k == _K_MATMUL_ID:
                    x = i64(ptr(t + src1_off).value + ne2_off).value
                elif k == _K_MUL and st[2] == _K_RMS_NORM:
                    p = st[1]
                    x = 1 if ptr(t + src0_off).value == p or ptr(t + src1_off).value == p else 0
                append((t1 - st[0], d, string_at(t + name_off), x))
                st[1], st[2] = t, k
            except Exception as e:  # never abort the graph (returning False would): report it later
                if self.error is None:
                    self.error = f"{type(e).__name__}: {e}"
            return True

        return cb

    def events(self):
        """The recorded nodes as OpEvents, in execution order. Raises if the callback failed."""
        from edgebench.backends.op_classes import classify_ggml
        from edgebench.records import OpEvent

        if self.error:
            raise RuntimeError(f"op tracer callback failed: {self.error}")
        out = []
        bounds = self.marks + [(len(self.raw), "", -1)]
        desc_str = self.ggml.desc_str
        for (start, phase, rep), (end, _, _) in zip(bounds, bounds[1:]):
            if not phase:
                continue
            for ns, d, name, x in self.raw[start:end]:
                op = desc_str(d)
                k = _KIND_OF.get(op, _K_OTHER)
                if k == _K_MUL and x == 1:
                    cls = "norm"
                else:
                    cls = classify_ggml(op, x if k in (_K_MATMUL, _K_MATMUL_ID) else 0)
                out.append(OpEvent(phase, rep, op, cls, name.decode("utf-8", "replace"), ns))
        return out


LAUNCH_PHASE = "launch"  # events "launch/<phase>": the no-op launch probe run after that phase
# events "launch1/<phase>": the same with nodes ggml computes on one thread (ggml_get_n_tasks: 1)
LAUNCH1_PHASE = "launch1"


class LaunchProbe:
    """Launches that do nothing, timed through the tracer's own callback path.

    A chain of ADDs on one-element tensors runs through a CPU ggml_backend_sched that calls the
    tracer's callback, so each node takes exactly the traced path of a model node (ask, graph view,
    plan, fork/join of ``n_threads`` threads -- ADD is split over all threads --, synchronize,
    notify) with nothing to compute. ``run(phase, rep)`` records one chain as events of phase
    "launch/<phase>"; the backend runs it right after each traced phase window, so the cost is
    taken in the same state (warm threads, same machine load) as the phase it corrects.

    A traced node is its own graph, and ggml plans a graph with as many threads as its nodes'
    largest task count (ggml-cpu.c: ggml_graph_plan, cplan.n_threads = MIN(max_tasks, n_threads)):
    GET_ROWS, SET_ROWS, SCALE, views... run on the calling thread with no fork/join at all. A
    second chain of SCALEs (one task) measures that cheaper launch: events "launch1/<phase>".
    """

    def __init__(self, tracer: NodeTracer, n_threads: int, n_nodes: int = 64) -> None:
        import llama_cpp

        self.tracer = tracer
        g = tracer.ggml
        L = self.lib = g.lib
        cpu = _bundled("ggml-cpu")
        if cpu is None:
            raise RuntimeError("libggml-cpu not found next to llama_cpp (launch probe)")
        cpu.ggml_backend_cpu_init.argtypes, cpu.ggml_backend_cpu_init.restype = [], c_void_p
        cpu.ggml_backend_cpu_set_n_threads.argtypes = [c_void_p, c_int]
        cpu.ggml_backend_cpu_set_n_threads.restype = None
        for fn, args, res in (
            ("ggml_backend_get_default_buffer_type", [c_void_p], c_void_p),
            ("ggml_backend_sched_new", [ctypes.POINTER(c_void_p), ctypes.POINTER(c_void_p), c_int, c_size_t,
                                        c_bool, c_bool], c_void_p),
            ("ggml_backend_sched_set_eval_callback", [c_void_p, type(tracer.callback), c_void_p], None),
            ("ggml_backend_sched_graph_compute", [c_void_p, c_void_p], c_int),
            ("ggml_backend_sched_free", [c_void_p], None),
            ("ggml_backend_free", [c_void_p], None),
            ("ggml_graph_overhead", [], c_size_t),
            ("ggml_new_tensor_1d", [c_void_p, c_int, c_int64], c_void_p),
            ("ggml_add", [c_void_p, c_void_p, c_void_p], c_void_p),
            ("ggml_scale", [c_void_p, c_void_p, ctypes.c_float], c_void_p),
            ("ggml_new_graph", [c_void_p], c_void_p),
            ("ggml_build_forward_expand", [c_void_p, c_void_p], None),
        ):
            f = getattr(L, fn)
            f.argtypes, f.restype = args, res
        self.backend = cpu.ggml_backend_cpu_init()
        self.ctx = None
        self.chains: dict[str, tuple[c_void_p, c_void_p]] = {}  # phase kind -> (sched, graph)
        if not self.backend:
            raise RuntimeError("ggml_backend_cpu_init failed (launch probe)")
        try:
            cpu.ggml_backend_cpu_set_n_threads(self.backend, n_threads)
            self.ctx = L.ggml_init(_InitParams((2 * n_nodes + 16) * g.tensor_overhead() + 2 * L.ggml_graph_overhead(),
                                               None, True))
            f32 = llama_cpp.GGML_TYPE_F32
            c = L.ggml_new_tensor_1d(self.ctx, f32, 1)
            for kind, node in ((LAUNCH_PHASE, lambda x: L.ggml_add(self.ctx, x, c)),
                               (LAUNCH1_PHASE, lambda x: L.ggml_scale(self.ctx, x, 1.0))):
                x = L.ggml_new_tensor_1d(self.ctx, f32, 1)
                for _ in range(n_nodes):
                    x = node(x)
                graph = L.ggml_new_graph(self.ctx)
                L.ggml_build_forward_expand(graph, x)
                backends = (c_void_p * 1)(self.backend)
                bufts = (c_void_p * 1)(L.ggml_backend_get_default_buffer_type(self.backend))
                sched = L.ggml_backend_sched_new(backends, bufts, 1, n_nodes + 64, False, False)
                self.chains[kind] = (sched, graph)
                L.ggml_backend_sched_set_eval_callback(sched, tracer.callback, None)
        except BaseException:
            self.close()
            raise

    def run(self, phase: str, rep: int) -> None:
        """Record each chain as events of phase "launch/<phase>" and "launch1/<phase>". Blocks
        (about a millisecond)."""
        for kind, (sched, graph) in self.chains.items():
            self.tracer.mark(f"{kind}/{phase}", rep)
            try:
                rc = self.lib.ggml_backend_sched_graph_compute(sched, graph)
            finally:
                self.tracer.mark("", rep)
            if rc != 0:
                raise RuntimeError(f"launch probe graph failed with status {rc}")

    def close(self) -> None:
        L = self.lib
        for sched, _ in self.chains.values():
            L.ggml_backend_sched_free(sched)
        self.chains = {}
        if self.ctx:
            L.ggml_free(self.ctx)
            self.ctx = None
        if self.backend:
            L.ggml_backend_free(self.backend)
            self.backend = None
