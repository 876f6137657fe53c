"""Prefect artifacts the tasks publish: metric tables, stage summaries, the validation report, the gate decision.

Each function takes plain dicts (what ``searchr3.stages`` returns or wrote to ``metrics/``) and only formats them.
"""
from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

EVAL_COLUMNS = ("ndcg@10", "recall@100", "mrr@10", "queries", "emission_rate", "fallbacks")
MAX_SUMMARY_ROWS = 40


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def flatten(summary: dict, prefix: str = "", depth: int = 2) -> dict:
    """Scalar leaves of a nested dict as ``{"a.b": value}`` (lists and deeper levels are left out)."""
    out: dict = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth > 1:
            out.update(flatten(value, name + ".", depth - 1))
        elif isinstance(value, str | int | float | bool) or value is None:
            out[name] = value
    return out


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def eval_rows(results: dict) -> list[dict]:
    """``metrics/eval.json`` ({set: {system: metrics}}) as one row per (set, system)."""
    return [{"set": ds, "system": system, **{c: m[c] for c in EVAL_COLUMNS if c in m}}
            for ds, by_system in results.items() for system, m in by_system.items()]


def publish_stage_summary(stage: str, summary: dict, command: str) -> None:
    """A markdown table of the stage's scalar results, and the command that regenerates them."""
    flat = list(flatten(summary).items())[:MAX_SUMMARY_ROWS]
    body = markdown_table([{"field": k, "value": v} for k, v in flat], ["field", "value"])
    create_markdown_artifact(markdown=f"# Stage `{stage}`\n\n{body}\n\nRegenerate: `{command}`\n",
                             key=f"stage-{stage.replace('_', '-')}", description=f"{stage} summary")


def publish_eval(results: dict, gate_set: str | None = None, command: str = "searchr3 stage evaluate") -> None:
    rows = eval_rows(results)
    if not rows:
        return
    create_table_artifact(table=rows, key="eval-metrics", description="metrics/eval.json: every system on every set")
    columns = ["set", "system"] + [c for c in EVAL_COLUMNS if any(c in r for r in rows)]
    gate = f"\n\nThe promotion gate reads nDCG@10 on `{gate_set}`." if gate_set else ""
    create_markdown_artifact(markdown=f"# Evaluation\n\n{markdown_table(rows, columns)}{gate}\n\nRegenerate: "
                                      f"`{command}`\n", key="eval-report", description="evaluation table")


def publish_validation(summary: dict | None, report_dir: str | Path, message: str | None = None) -> None:
    """Where the Data Docs and summary.json are, and every broken rule with its example rows."""
    report_dir = Path(report_dir).resolve()
    docs = report_dir / "data_docs" / "index.html"
    summary_path = report_dir / "summary.json"
    passed = bool(summary and summary.get("success"))
    lines = [f"# Data validation: {'passed' if passed else 'FAILED'}", "",
             f"- Data Docs: [{docs}]({docs.as_uri()})", f"- Summary: `{summary_path}`", ""]
    if summary:
        rows = [{"dataset": t["dataset"], "rows": t["rows"], "expectations": t["expectations"],
                 "failed": ", ".join(f["rule"] for f in t["failed"]) or "-"} for t in summary.get("tables", [])]
        lines += [markdown_table(rows, ["dataset", "rows", "expectations", "failed"]), ""]
    if message:
        lines += ["## Why it failed", "", "```", message, "```", ""]
    lines.append("Regenerate: `searchr3 stage validate`")
    create_markdown_artifact(markdown="\n".join(lines), key="validation-report",
                             description="Great Expectations validation of data/")
    if docs.exists():
        create_link_artifact(link=docs.as_uri(), link_text="Data Docs (Great Expectations)", key="validation-data-docs")


def publish_decision(decision: dict, record_path: str, promoted: bool) -> None:
    rows = [{"field": k, "value": decision.get(k)}
            for k in ("promote", "outcome", "system", "candidate", "production", "tolerance", "gate_set", "metric",
                      "weights")]
    title = "promoted" if promoted else "not promoted"
    body = (f"# Promotion gate: {title}\n\n**{decision['reason']}**\n\n{markdown_table(rows, ['field', 'value'])}\n\n"
            f"Production record: `{record_path}`"
            + ("" if promoted else " (left untouched)") + "\n")
    create_markdown_artifact(markdown=body, key="promotion-decision", description=decision["reason"][:200])
