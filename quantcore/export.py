"""JSON and CSV text for results, comparisons and tables (a leaf module: analysis and report both use it).

Non-finite floats become the strings "inf", "-inf", "nan" in JSON (which has no such numbers) and the
same words in CSV; floats keep full precision (``repr``). CSV fields are quoted as ``csv.QUOTE_MINIMAL``
does and also when they hold ``#``, so an optional first ``# note`` line can be skipped as a comment.
"""
from __future__ import annotations

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


def _csv_field(s: str) -> str:
    """A CSV field, quoted as csv.QUOTE_MINIMAL does (delimiter, quote, line breaks) and also when it holds
    '#', so readers that skip '#' comments (pandas ``comment="#"``) keep labels such as ``#3``."""
    if any(c in s for c in ',"\r\n#'):
        return '"' + s.replace('"', '""') + '"'
    return s


def to_csv(rows: list[dict] | dict[str, np.ndarray], note: str | None = None) -> str:
    """CSV text from a list of row dicts or a dict of equal-length columns (full float precision).

    ``note`` (one line; line breaks become spaces) is written first as a comment line ``# note``, before the
    header. Readers skip it with ``pandas.read_csv(f, comment="#")`` (cells holding '#' are quoted, so that is
    safe), or ``csv.DictReader(line for line in f if not line.startswith("#"))``; a file without a note is a
    plain CSV.
    """
    if isinstance(rows, dict):
        cols = list(rows)
        n = len(next(iter(rows.values()))) if rows else 0
        rows = [{c: rows[c][i] for c in cols} for i in range(n)]
    if not rows:
        return ""
    cols = list(rows[0])
    lines = [f"# {' '.join(str(note).split())}"] if note else []
    lines.append(",".join(_csv_field(str(c)) for c in cols))
    for r in rows:
        cells = [_csv_field(_cell(r.get(c, ""))) for c in cols]
        lines.append(",".join(cells) if cells != [""] else '""')  # a lone empty cell is not a blank line
    return "\n".join(lines) + "\n"
