"""JSON and CSV text for results, comparisons and tables (a leaf module: analysis and report both use it).

Non-finite floats become the strings "inf", "-inf", "nan" in JSON (which has no such numbers) and the
same words in CSV; floats keep full precision (``repr``).
"""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np


def jsonable(obj):
    """Convert numpy values, arrays and non-finite floats (as "inf", "-inf", "nan") to JSON-safe values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isfinite(f):
            return f
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    return obj


def to_json(obj) -> str:
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)


def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return repr(f) if math.isfinite(f) else ("nan" if math.isnan(f) else ("inf" if f > 0 else "-inf"))
    if isinstance(v, (np.bool_, bool)):
        return "true" if v else "false"
    return str(v)


def to_csv(rows: list[dict] | dict[str, np.ndarray]) -> str:
    """CSV text from a list of row dicts or a dict of equal-length columns (full float precision)."""
    if isinstance(rows, dict):
        cols = list(rows)
        n = len(next(iter(rows.values()))) if rows else 0
        rows = [{c: rows[c][i] for c in cols} for i in range(n)]
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = list(rows[0])
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c, "")) for c in cols])
    return buf.getvalue()
