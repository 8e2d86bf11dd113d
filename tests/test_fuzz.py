"""Property-based fuzzing of every reader of untrusted input (issue 14): GGUF header and metadata,
ONNX graph layout, run bundles (run.json / samples.csv via ingest), TOML sweep configs and device
profiles. Property: the input is accepted, or rejected with an InputError whose message is one
short line; never any other exception.

A bounded number of examples keeps the suite fast (EDGEBENCH_FUZZ_EXAMPLES, default 60);
benchmarks/fuzz_long.py runs the same properties with many more.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgebench.errors import InputError

EXAMPLES = int(os.environ.get("EDGEBENCH_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize="EDGEBENCH_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MAX_MESSAGE = 300


def accepted_or_input_error(fn, *args):
    """Call the reader: what it returns, or None when it rejected the input as it should."""
    try:
        return fn(*args)
    except InputError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) <= MAX_MESSAGE, f"{len(msg)} chars: {msg[:400]!r}"
        return None


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="eb-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- GGUF header + metadata ----------------------------------------------------------------------------
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_KEYS = ["general.architecture", "general.name", "general.alignment", "general.file_type", "llama.block_count",
         "llama.embedding_length", "llama.attention.head_count", "llama.attention.head_count_kv",
         "llama.attention.key_length", "llama.feed_forward_length", "llama.context_length", "llama.vocab_size",
         "tokenizer.ggml.tokens", "edgebench.preset"]


def _gstr(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


@st.composite
def gguf_value(draw, depth=0):
    """(type code, encoded bytes) of one metadata value, sometimes of the wrong kind for its key."""
    vtype = draw(st.sampled_from([*_SCALARS, 8, 8, 9] if depth < 2 else [*_SCALARS, 8]))
    if vtype == 8:
        return 8, _gstr(draw(st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=20))))
    if vtype == 9:
        items = draw(st.lists(gguf_value(depth + 1), max_size=5))
        itype = items[0][0] if items else draw(st.sampled_from(list(_SCALARS)))
        items = [v for t, v in items if t == itype]
        return 9, struct.pack("<IQ", itype, len(items)) + b"".join(items)
    fmt = _SCALARS[vtype]
    if fmt[1] in "fd":
        return vtype, struct.pack(fmt, draw(st.floats(width=32 if fmt[1] == "f" else 64)))
    if fmt[1] == "?":
        return vtype, struct.pack("<B", draw(st.integers(0, 255)))
    n = struct.calcsize(fmt) * 8
    lo, hi = (0, 2**n - 1) if fmt[1].isupper() else (-(2 ** (n - 1)), 2 ** (n - 1) - 1)
    return vtype, struct.pack(fmt, draw(st.integers(lo, hi)))


@st.composite
def gguf_file(draw) -> bytes:
    """A GGUF header: plausible keys with values of any type, a tensor table with any dims / types /
    offsets, counts that may lie; then maybe truncated or with a few bytes flipped."""
    kvs = draw(st.lists(st.tuples(st.sampled_from(_KEYS) | st.text(max_size=12), gguf_value()), max_size=8))
    tensors = draw(st.lists(st.tuples(
        st.sampled_from(["token_embd.weight", "output.weight", "blk.0.attn_q.weight"]) | st.text(max_size=10),
        st.lists(st.integers(0, 2**64 - 1) | st.integers(1, 64), min_size=0, max_size=5),
        st.integers(0, 40) | st.integers(0, 2**32 - 1), st.integers(0, 64) | st.integers(0, 2**64 - 1)), max_size=4))
    n_kv = draw(st.just(len(kvs)) | st.integers(0, 2**64 - 1))
    body = struct.pack("<4sIQQ", b"GGUF", draw(st.sampled_from([2, 3, 3, 1, 4])), len(tensors), n_kv)
    for key, (vtype, value) in kvs:
        body += _gstr(key.encode()) + struct.pack("<I", vtype) + value
    for name, dims, tcode, off in tensors:
        body += _gstr(name.encode()) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        body += struct.pack("<IQ", tcode, off)
    body += b"\0" * draw(st.integers(0, 256))
    if draw(st.booleans()):
        body = body[:draw(st.integers(0, len(body)))]
    for pos, byte in draw(st.lists(st.tuples(st.integers(0, max(len(body) - 1, 0)), st.integers(0, 255)), max_size=3)):
        if pos < len(body):
            body = body[:pos] + bytes([byte]) + body[pos + 1:]
    return body


# arrays nested past Python's recursion limit: a 24 KB file
_NESTED = struct.pack("<4sIQQ", b"GGUF", 3, 0, 1) + _gstr(b"k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 2000


@FUZZ
@given(gguf_file())
@example(_NESTED)
def test_fuzz_gguf_reader(scratch, data):
    from edgebench.models import gguf_file as gf

    path = scratch / "fuzz.gguf"
    path.write_bytes(data)
    accepted_or_input_error(gf.read_gguf_info, path)


# -- ONNX graph layout --------------------------------------------------------------------------------------
_ONNX_NAMES = ["input_ids", "attention_mask", "position_ids", "logits", "past_key_values.0.key",
               "past_key_values.0.value", "present.0.key", "present.0.value", "past_key_values.1.key",
               "present.1.value", "num_logits_to_keep", "use_cache_branch", "weird"]


@st.composite
def onnx_graph(draw):
    from onnx import TensorProto, helper

    elem = st.sampled_from([TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.UNDEFINED, 1000])
    dim = st.none() | st.integers(-2, 64) | st.sampled_from(["batch", "seq", ""])

    def value_infos(names):
        out = []
        for n in names:
            shape = draw(st.none() | st.lists(dim, max_size=5))
            out.append(helper.make_tensor_value_info(n, draw(elem), shape))
        return out

    inputs = value_infos(draw(st.lists(st.sampled_from(_ONNX_NAMES), max_size=8, unique=True)))
    outputs = value_infos(draw(st.lists(st.sampled_from(_ONNX_NAMES), max_size=6, unique=True)))
    nodes = []
    for op in draw(st.lists(st.sampled_from(["Gather", "GroupQueryAttention", "MatMulNBits", "MatMul", "Add"]), max_size=4)):
        ins = draw(st.lists(st.sampled_from(["embed", "input_ids", "w", "x", ""]), max_size=5))
        outs = draw(st.lists(st.sampled_from(["present.0.key", "present.0.value", "y"]), max_size=3))
        attrs = {"num_heads": draw(st.integers(-1, 64))} if draw(st.booleans()) else {}
        nodes.append(helper.make_node(op, ins, outs, **attrs))
    inits = []
    for name in draw(st.lists(st.sampled_from(["embed", "w", "input_ids"]), max_size=3, unique=True)):
        dims = draw(st.lists(st.integers(0, 8), max_size=3))
        n = 1
        for d in dims:
            n *= d
        inits.append(helper.make_tensor(name, draw(st.sampled_from([TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT64])),
                                        dims, [0] * n))
    return helper.make_graph(nodes, "fuzz", inputs, outputs, inits)


@FUZZ
@given(onnx_graph())
def test_fuzz_onnx_layout(graph):
    from edgebench.models import onnx_file

    def read(g):
        layout = onnx_file.read_layout(Path("fuzz.onnx"), g)
        n_params, n_bytes, ops = onnx_file.count_weights(g)
        return layout, onnx_file.infer_quant(g, ops)

    accepted_or_input_error(read, graph)


# -- run bundles -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_doc(fake_run_bundle):
    """A real bundle's run.json and samples.csv (fake backend, 2 cases)."""
    return json.loads((fake_run_bundle / "run.json").read_text()), (fake_run_bundle / "samples.csv").read_text()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _mutate_json(draw, doc):
    """Replace values at a few random places of the document (any depth) with any JSON value."""
    for _ in range(draw(st.integers(0, 4))):
        node = doc
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
            if not keys:
                break
            k = draw(st.sampled_from(keys))
            if draw(st.integers(0, 2)) == 0 and isinstance(node[k], (dict, list)):
                node = node[k]
                continue
            if draw(st.integers(0, 5)) == 0 and isinstance(node, dict):
                del node[k]
            else:
                node[k] = draw(JSON_VALUES | st.sampled_from(["../x", "/abs", "ok", "a\x00b", "x" * 2000]))
            break
    return doc


@st.composite
def bundle_files(draw, base):
    doc, samples = base
    doc = _mutate_json(draw, json.loads(json.dumps(doc)))
    lines = samples.splitlines()
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        cells = lines[i].split(",")
        j = draw(st.integers(0, len(cells) - 1))
        cells[j] = draw(st.sampled_from(["", "nan", "inf", "-1", "1e400", "9" * 30, "x", '"', "2.5", "\x00"])
                        | st.text(max_size=12))
        lines[i] = ",".join(cells)
    if draw(st.booleans()):
        lines = lines[:draw(st.integers(0, len(lines)))]
    text = draw(st.just(json.dumps(doc)) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
    return text, "\n".join(lines) + "\n"


@FUZZ
@given(data=st.data())
def test_fuzz_run_bundles(scratch, bundle_doc, data):
    """Read and, when accepted, store the bundle: what ingest accepts, the store must hold."""
    from edgebench.store.bundle import ingest_bundle
    from edgebench.store.database import Store

    run_json, samples_csv = data.draw(bundle_files(bundle_doc))
    d = scratch / "bundle"
    d.mkdir(exist_ok=True)
    (d / "run.json").write_text(run_json, encoding="utf-8", errors="surrogatepass")
    (d / "samples.csv").write_text(samples_csv, encoding="utf-8", errors="surrogatepass")
    accepted_or_input_error(ingest_bundle, Store(scratch / "store"), d, True)


# -- TOML sweep configs -------------------------------------------------------------------------------------------
_SPEC_KEYS = ["model", "quant", "backend", "threads", "n_prompt", "n_gen", "depth", "ctx", "batch", "ubatch",
              "flash_attn", "reps", "timeout", "cooldown", "cooldown_temp", "profile", "pg", "device", "warmup",
              "verify", "target_ci", "max_reps", "max_time", "quality", "cache_type_k", "gpu_layers", "bogus"]
TOML_SCALARS = (st.integers(-2**64, 2**64) | st.floats() | st.booleans() | st.text(max_size=12)
                | st.sampled_from(["auto", "1,2", "on", "512,128", "-1", "0"]))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v) if isinstance(v, str) else str(v)


@FUZZ
@given(st.dictionaries(st.sampled_from(_SPEC_KEYS), TOML_SCALARS | st.lists(TOML_SCALARS, max_size=3), max_size=6),
       st.text(max_size=30))
def test_fuzz_sweep_toml(scratch, table, junk):
    from edgebench.run import spec

    path = scratch / "sweep.toml"
    text = "\n".join(f"{k} = {_toml_value(v)}" for k, v in table.items())
    path.write_text(text + ("\n" + junk if junk.startswith("#") or not table else ""), encoding="utf-8", errors="surrogatepass")
    accepted_or_input_error(lambda: spec.build_spec({}, spec.load_toml(path)))


# -- device profiles -----------------------------------------------------------------------------------------
_PROFILE_KEYS = ["name", "description", "aliases", "memory_bytes", "mem_bandwidth_gbs", "peak_tflops_fp16",
                 "telemetry", "bogus"]
_PROFILE_TABLES = ["detect", "recommended", "power_modes", "fair_run", "sources"]


@FUZZ
@given(st.dictionaries(st.sampled_from(_PROFILE_KEYS), TOML_SCALARS | st.lists(TOML_SCALARS, max_size=3), max_size=6),
       st.dictionaries(st.sampled_from(_PROFILE_TABLES),
                       st.dictionaries(st.sampled_from(["dt_model", "cpu_model", "memory_gib", "x"]), TOML_SCALARS, max_size=3),
                       max_size=3),
       st.booleans())
def test_fuzz_device_profiles(scratch, top, tables, named):
    from edgebench.machine import profiles

    if named:
        top.setdefault("name", "fuzz-board")
        top.setdefault("description", "a board")
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for t, kv in tables.items():
        lines += [f"[{t}]"] + [f"{k} = {_toml_value(v)}" for k, v in kv.items()]
    path = scratch / "fuzz-board.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    accepted_or_input_error(profiles.read_profile, path)
