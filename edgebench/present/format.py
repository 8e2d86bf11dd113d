"""The one display formatter: every metric value a table, report, comparison or figure shows is
written here, as records.FIELDS says (its ``fmt``). CSV files are not display: their one encoder is
edgebench.store.bundle.csv_cell.

Formats: "" text or a key value (512.0 -> "512"); "num" three significant digits (12,345 / 45.6 /
2.00 / 0.0123); "mib" bytes in MiB (1,234.5); "mj" joules in mJ, three significant digits; "pct" a
fraction as a percentage with one decimal, "pct0" without, "pct2" with two; anything else is a str.format spec.
"""

from __future__ import annotations

import math
from typing import Any

from edgebench.records import FIELDS, label_value

MISSING = "-"
# Unit a formatted value is in, where the format converts it (else the field's own unit).
_DISPLAY_UNITS = {"mib": "MiB", "mj": "mJ/token", "pct": "", "pct0": "", "pct2": ""}


def number(x: float) -> str:
    """A measured number with three significant digits: 12,345 / 501.6 -> 502 / 45.6 / 2.00 / 0.0123."""
    if x == 0:
        return "0"
    if abs(x) >= 99.95:  # '{:#.3g}' would write 100.0 as '100.'
        return f"{x:,.0f}"
    return f"{x:#.3g}"


def tick(x: float, _pos=None) -> str:
    """An axis tick (a matplotlib tick formatter): like number(), without trailing zeros."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_of(name: str) -> str:
    f = FIELDS.get(name)
    return f.fmt if f else ""


def value(v: Any, fmt: str) -> str:
    """``v`` written in format ``fmt`` (see the module docstring); "-" when missing."""
    if _missing(v):
        return MISSING
    try:
        if fmt == "num":
            return number(float(v))
        if fmt == "mib":
            return f"{float(v) / 2**20:,.1f}"
        if fmt == "mj":
            return number(float(v) * 1e3)
        if fmt == "pct":
            return f"{float(v):.1%}"
        if fmt == "pct0":
            return f"{float(v):.0%}"
        if fmt == "pct2":
            return f"{float(v):.2%}"
        if fmt:
            return fmt.format(v)
    except (TypeError, ValueError):
        pass
    return label_value(v)


def cell(name: str, v: Any) -> str:
    """Field ``name``'s value ``v`` as every view shows it."""
    return value(v, fmt_of(name))


def with_unit(name: str, v: Any) -> str:
    """cell() followed by the unit the shown number is in: '1,234.5 MiB', '2.00 ms', '14.9 mJ/token'."""
    text = cell(name, v)
    f = FIELDS.get(name)
    unit = _DISPLAY_UNITS.get(f.fmt, f.unit) if f else ""
    return f"{text} {unit}" if unit and text != MISSING else text


def header(name: str) -> str:
    f = FIELDS.get(name)
    return f.header if f else name


def is_text(name: str) -> bool:
    """True for columns read as text (left-aligned): names and key values, not measured numbers."""
    return fmt_of(name) == ""
