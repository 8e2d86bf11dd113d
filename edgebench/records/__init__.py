"""THE schema of edgebench results: one place for every stored field, its type and its unit.

The store's DDL, the CSV headers and the report columns all derive from the definitions here.

Stored data is long and flat. A *sample* is one raw measurement:
(run_id, case_id, rep, phase, metric, idx, label, value, t_ns), in raw SI units (ns, bytes,
joules, watts, degrees C). Per-case summaries (tok/s, percentiles...) are computed on read by
``edgebench.analysis``; nothing derived is stored.

SCHEMA_VERSION history:
  1 - first stored format (runs, cases, samples).

The package holds it in three modules (case, samples, fields); import from ``edgebench.records``.
"""

from edgebench.records.case import (
    CACHE_TYPES,
    FLASH_ATTN_VALUES,
    GRAPH_OPT_VALUES,
    KEY_FIELDS,
    SCHEMA_VERSION,
    TEST_KINDS,
    Case,
    kv_positions,
    llama_bench_name,
    pad_ctx,
)
from edgebench.records.fields import (
    FIELDS,
    LABEL_FIELDS,
    MODEL_INFO_FIELDS,
    SUMMARY_COLUMNS,
    Field,
    case_label,
    label_value,
)
from edgebench.records.samples import ENERGY_TOTAL, GGML_ONE_TASK_OPS, METRICS, OP_CLASSES, Metric, OpEvent, Sample

__all__ = [
    "CACHE_TYPES", "ENERGY_TOTAL", "FIELDS", "FLASH_ATTN_VALUES", "GGML_ONE_TASK_OPS", "GRAPH_OPT_VALUES", "KEY_FIELDS",
    "LABEL_FIELDS", "METRICS", "MODEL_INFO_FIELDS", "OP_CLASSES", "SCHEMA_VERSION", "SUMMARY_COLUMNS", "TEST_KINDS",
    "Case", "Field", "Metric", "OpEvent", "Sample", "case_label", "kv_positions", "label_value", "llama_bench_name",
    "pad_ctx",
]
