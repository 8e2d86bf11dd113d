"""onnxruntime profiler events -> OpEvents: each node's kernel time, its op class and the
(phase, rep) window its session run started in (the backend's ops_mark calls)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from edgebench.backends.base import OpEvent
from edgebench.backends.op_classes import classify_onnx


def _activation_rows(args: dict[str, Any]) -> int:
    """Rows (tokens) of a matmul's first input from the profiler's input_type_shape."""
    shapes = args.get("input_type_shape") or []
    if not shapes:
        return 0
    shape = next(iter(shapes[0].values()), [])
    if len(shape) < 2:
        return 1
    # [M, K] / [B, S, K]: all rows; [B, H, S, D] (per-head attention products): S
    return math.prod(shape[:-1]) if len(shape) <= 3 else shape[-2]


def attribute_events(events: list[dict], start_ns: int, marks: list[tuple[int, str, int]],
                     traced_runs: int) -> list[OpEvent]:
    """OpEvents of the node events in an onnxruntime profile (``start_ns``: its start on the wall
    clock; ``marks``: (wall ns, phase, rep) from ops_mark; ``traced_runs``: runs made while tracing)."""
    marks = sorted(marks)
    mark_t = [t for t, _, _ in marks]

    def label(abs_ns: int) -> tuple[str, int] | None:
        i = int(np.searchsorted(mark_t, abs_ns, side="right")) - 1
        return (marks[i][1], marks[i][2]) if i >= 0 else None

    # A whole run belongs to the window its start falls in: node timestamps near a mark
    # cannot then be split from their run.
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(runs) < traced_runs:
        warnings.warn(f"onnxruntime's profiler recorded {len(runs)} of {traced_runs} runs "
                      "(its event buffer is full): op times are partial", stacklevel=2)
    run_start = [r[0] for r in runs]
    out = []
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        j = int(np.searchsorted(run_start, e["ts"], side="right")) - 1
        ts = runs[j][0] if j >= 0 and e["ts"] <= runs[j][1] else e["ts"]
        lab = label(start_ns + ts * 1000)
        if lab is None:
            continue
        args = e.get("args", {})
        op = args.get("op_name", "")
        out.append(OpEvent(phase=lab[0], rep=lab[1], op=op, op_class=classify_onnx(op, _activation_rows(args)),
                           name=e["name"][: -len("_kernel_time")], ns=int(e["dur"]) * 1000))
    return out
