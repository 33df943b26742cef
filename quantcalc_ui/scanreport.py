"""Everything the whole-model PDF report shows, as plain data (:class:`ScanReport`), built from a scan's rows.

Like :mod:`quantcalc_ui.report` for one tensor: text, numbers and :class:`quantcalc_ui.report.Table` values only,
so :func:`quantcalc_ui.pdf.render_scan_pdf` needs nothing but the model and a test can read what will be drawn.
Every number comes from quantcore: the totals, the error by role and by layer from
:func:`quantcore.scanresults.summarize`, the most damaged tensors from :func:`quantcalc_ui.modelscan.damage_table`,
the plan from :func:`quantcore.plan.solve_plan` (given, not solved here).

Truncation: the damage table keeps the ``max_worst`` most damaged tensors and the plan's per-tensor choices the
first ``max_choices`` in checkpoint order; each table's note says what was kept of how many and which export
holds the rest. Tensor names are untrusted text: the renderer draws them as plain text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from quantcore.plan import MixedPlan
from quantcore.scanresults import ScanRow, ScanSummary, Skipped, summarize

from .modelscan import LayerCurves, damage_table, layer_curves
from .report import Column, Table

MAX_WORST = 25       # rows of the damage table in the PDF
MAX_CHOICES = 60     # rows of the plan's per-tensor choices in the PDF


@dataclass(frozen=True)
class ScanReport:
    title: str
    checkpoint: str
    facts: tuple[tuple[str, str], ...]        # (label, text): what was scanned, skipped, how the scan ended
    totals: Table | None                      # one row per scheme over every scanned tensor
    worst: Table | None                       # the most damaged tensors, worst first
    by_role: Table | None
    by_layer: Table | None
    curves: LayerCurves | None                # the per-layer chart (None: no tensor has a layer index)
    plan_words: str                           # the plan in one paragraph (or why there is none)
    plan_table: Table | None                  # the plan against each scheme alone
    plan_choices: Table | None                # tensor -> scheme
    notes: tuple[str, ...] = ()               # tensors that failed, in words


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _facts(s: ScanSummary, rows: Sequence[ScanRow], schemes: Sequence[str], problems: Sequence[str],
           complete: bool, tensors_total: int) -> tuple[tuple[str, str], ...]:
    weights = sum({(r.file_key, r.tensor): r.n for r in rows}.values())
    scanned = (f"{_plural(s.tensors_scanned, 'tensor')}, {weights:,} weights, under {_plural(len(schemes), 'scheme')}: "
               f"{', '.join(schemes)}")
    if not complete:
        scanned += f" (the scan was stopped: {s.tensors_scanned:,} of {tensors_total:,} tensors measured)"
    skipped = "none"
    if s.tensors_skipped:
        skipped = (f"{_plural(s.tensors_skipped, 'tensor')}: "
                   + "; ".join(f"{reason} ({k})" for reason, k in sorted(s.skipped_reasons.items(),
                                                                         key=lambda kv: (-kv[1], kv[0]))))
    partial = "; ".join(f"{k} on {_plural(n, 'tensor')}" for k, n in sorted(s.scheme_skips.items()))
    src = s.totals[0] if s.totals else None
    source = (f"{src.source_bytes:,} bytes ({8 * src.source_bytes / src.n:.2f} bits/weight) for the scanned tensors"
              if src is not None and src.n else "")
    return (("Checkpoint", s.checkpoint), ("Scanned", scanned), ("Stored", source), ("Skipped", skipped),
            ("Not measured", partial), ("Failed", _plural(len(problems), "tensor") if problems else ""))


def _totals(s: ScanSummary) -> Table | None:
    if not s.totals:
        return None
    columns = (Column("Scheme", "scheme"), Column("Tensors", "int"), Column("Bytes", "bytes"),
               Column("Bits/weight", "bpw"), Column("% of stored", "percent"), Column("Rel. RMSE", "error"),
               Column("SQNR dB", "db"))
    rows = tuple((t.scheme, t.tensors, t.bytes, t.bits_per_weight,
                  100.0 * t.bytes / t.source_bytes if t.source_bytes else None, t.rel_rmse, t.sqnr_db)
                 for t in s.totals)
    return Table("Totals per scheme", columns, rows,
                 "Over every scanned tensor: bytes of codes and scales; relative RMSE sqrt(sum of squared errors / "
                 "sum of squared weights) and SQNR 10 log10 of the inverse ratio, all weights together.")


def _worst(rows: Sequence[ScanRow], schemes: Sequence[str], plan: MixedPlan | None, limit: int) -> Table | None:
    table = damage_table(rows, schemes, plan, limit)
    if not table:
        return None
    shown = [s for s in schemes if any(s in r.by_scheme for r in table)]
    columns = ((Column("Tensor", "text"), Column("Role", "text"), Column("Shape", "text"))
               + tuple(Column(s, "error", "Relative RMSE") for s in shown)
               + ((Column("Plan", "text"),) if plan is not None else ()))
    body = tuple((r.tensor, r.role, r.shape) + tuple(r.by_scheme[s][0] if s in r.by_scheme else None for s in shown)
                 + ((r.planned,) if plan is not None else ()) for r in table)
    n = len({r.tensor for r in rows})
    kept = (f"All {_plural(n, 'scanned tensor')}" if len(table) >= n
            else f"The {len(table):,} most damaged of {n:,} scanned tensors (every row is in the CSV export)")
    return Table("Most damaged tensors", columns, body,
                 f"{kept}, by their largest relative RMSE over the schemes, worst first."
                 + (" Plan: the scheme the mixed-precision plan gives the tensor." if plan is not None else ""))


def _groups(title: str, label: str, groups, schemes: Sequence[str], what: dict[str, str]) -> Table | None:
    if not groups:
        return None
    keys = list(dict.fromkeys(g.group for g in groups))
    shown = [s for s in schemes if any(g.scheme == s for g in groups)]
    val = {(g.scheme, g.group): g for g in groups}
    count = {k: max(g.tensors for g in groups if g.group == k) for k in keys}
    columns = ((Column(label, "text"), Column("Tensors", "int"))
               + tuple(Column(s, "error", "Relative RMSE") for s in shown))
    rows = tuple((what.get(k, k), count[k]) + tuple(val[(s, k)].rel_rmse if (s, k) in val else None for s in shown)
                 for k in keys)
    return Table(title, columns, rows, "sqrt(sum of squared errors / sum of squared weights) over the group's tensors.")


def _plan(plan: MixedPlan | None, plan_error: str, budget: float, limit: int
          ) -> tuple[str, Table | None, Table | None]:
    if plan is None:
        return (f"No plan within {budget:g} bits/weight: {plan_error}" if plan_error
                else "No plan: nothing was measured."), None, None
    counts = ", ".join(f"{s} for {_plural(k, 'tensor')}" for s, k in sorted(plan.to_dict()["counts"].items()))
    how = "optimal (exact)" if plan.optimal else f"within {100 * plan.relative_gap:.2g} % of the optimum"
    n = plan.n_weights
    words = (f"Budget {budget:g} bits/weight ({plan.budget_bytes:,} bytes over {n:,} weights). The plan uses "
             f"{plan.total_bytes:,} bytes ({plan.bits_per_weight:.4g} bits/weight): {counts}; {how}. Error: the "
             "mean over weights of each tensor's squared error relative to its mean square.")
    columns = (Column("Scheme", "scheme"), Column("Bytes", "bytes"), Column("Bits/weight", "bpw"),
               Column("Mean rel. MSE", "error"), Column("x plan error", "bpw"), Column("Fits the budget", "flag"))
    rows = [("Mixed plan", plan.total_bytes, plan.bits_per_weight, plan.error / n, 1.0, True)]
    rows += [(u.scheme, u.bytes, u.bits_per_weight, u.error / n,
              u.error / plan.error if plan.error > 0 else float("inf"), u.fits) for u in plan.uniform]
    table = Table("Mixed-precision plan against each scheme alone", columns, tuple(rows),
                  "Highlighted: the plan. x plan error: the scheme's error divided by the plan's.", highlight=(0,))
    choices = plan.choices[:limit]
    note = (f"All {_plural(len(plan.choices), 'tensor')}, in checkpoint order." if len(choices) == len(plan.choices)
            else f"The first {len(choices):,} of {len(plan.choices):,} tensors in checkpoint order; every choice is "
                 "in the plan CSV and the JSON export.")
    return words, table, Table("The plan, tensor by tensor", (Column("Tensor", "text"), Column("Scheme", "text")),
                               tuple(choices), note)


def scan_report(checkpoint: str, schemes: Sequence[str], rows: Sequence[ScanRow], skipped: Sequence[Skipped] = (),
                problems: Sequence[str] = (), plan: MixedPlan | None = None, *, budget: float,
                plan_error: str = "", complete: bool = True, tensors_total: int | None = None,
                max_worst: int = MAX_WORST, max_choices: int = MAX_CHOICES) -> ScanReport:
    """The whole-model report of a scan of ``checkpoint`` under ``schemes`` (scheme names, in their order).

    ``plan``: the mixed-precision plan over ``rows`` under ``budget`` bits/weight (or None, with ``plan_error``
    saying why); ``complete`` False when the scan was stopped after ``len(tensors)`` of ``tensors_total``."""
    s = summarize(rows, skipped, checkpoint)
    schemes = [sc for sc in schemes if any(t.scheme == sc for t in s.totals)] or list(schemes)
    curves = layer_curves(rows, schemes)
    plan_words, plan_table, plan_choices = _plan(plan, plan_error, budget, max_choices)
    return ScanReport(
        title=f"Whole-model report: {checkpoint or 'checkpoint'}", checkpoint=checkpoint,
        facts=_facts(s, rows, schemes, problems, complete, tensors_total if tensors_total is not None
                     else s.tensors_scanned),
        totals=_totals(s), worst=_worst(rows, schemes, plan, max_worst),
        by_role=_groups("Relative RMSE by role", "Role", s.by_role, schemes, {}),
        by_layer=_groups("Relative RMSE by layer", "Layer", s.by_layer, schemes, {"-": "no layer index"}),
        curves=curves if curves.layers else None, plan_words=plan_words, plan_table=plan_table,
        plan_choices=plan_choices, notes=tuple(f"Not measured: {p}" for p in problems))
