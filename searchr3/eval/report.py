"""Render evaluation results (dicts from ``searchr3.eval.evaluate``) as a markdown table; write the report.

:func:`table_cells` formats every cell once: the markdown table of reports/eval.md and the search service's
page (which renders a release's metrics/eval.json through :func:`metrics_rows`) show the same numbers."""
from __future__ import annotations

from pathlib import Path

from searchr3.eval.evaluate import REASONING_KEYS, RESULT_KEYS
from searchr3.files import write_text_atomic


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metrics_rows(metrics: dict) -> list[dict]:
    """``metrics/eval.json`` (``{dataset: {system: result}}``) back into the rows the report was rendered from."""
    return [{"dataset": dataset, "system": system, **result}
            for dataset, systems in metrics.items() if isinstance(systems, dict)
            for system, result in systems.items() if isinstance(result, dict)]


def table_cells(results: list[dict]) -> tuple[list[str], list[list[str]], list[bool]]:
    """``(columns, rows of formatted cells, numeric flag per column)``; reasoning columns only when some row has them."""
    columns = list(RESULT_KEYS)
    if any(k in r for r in results for k in REASONING_KEYS):
        columns += list(REASONING_KEYS)
    rows = [[_cell(r.get(c)) for c in columns] for r in results]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in results) for c in columns]
    return columns, rows, numeric


def render_table(results: list[dict]) -> str:
    """One row per result; the reasoning columns appear only when some result has them."""
    if not results:
        return "(no results)"
    columns, rows, numeric = table_cells(results)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.rjust(w) if num else cell.ljust(w)
                                 for cell, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(columns), rule, *(line(row) for row in rows)])


def caps_sentence(rows: list[dict]) -> str:
    """How long the documents each system read were: the same cap for every dense system, stated once."""
    caps = sorted({r["cap"] for r in rows if r.get("cap") is not None})
    if not caps:
        return "Every system read whole documents."
    named = ", ".join(f"{c} tokens" for c in caps)
    more = (f" (a system named `<system>@<cap>` read documents cut at that cap; the others at {caps[0]})"
            if len(caps) > 1 else "")
    return (f"Dense systems (MiniLM and ours alike) read documents cut at {named}, each in its own tokenizer, as the "
            f"`cap` column says{more}; BM25 reads whole documents.")


def write_report(path: str | Path, rows: list[dict], examples: list[tuple[str, str, str]]) -> Path:
    """``reports/eval.md``: the table of ``rows`` and up to two reasoning traces per (set, system), atomically."""
    lines = ["# Evaluation report", "", caps_sentence(rows), "", render_table(rows), ""]
    if examples:
        lines += ["## Example reasoning traces", ""]
        lines += [f"- **{s}** on {ds}: {t.strip()[:400]!r}" for ds, s, t in examples]
    return write_text_atomic(path, "\n".join(lines) + "\n")
