"""``searchr3 validate``: Great Expectations checks of the data stage output or of one input dataset.

Exit 0 when every rule holds (warnings, such as ``shared_query``, are printed on stderr), 3 when a
rule is broken (the report goes to stdout, one ``searchr3: error:`` line to stderr).
"""
from __future__ import annotations

import sys

from searchr3.commands.data import params_or_defaults
from searchr3.config import section
from searchr3.validate.config import ValidateConfig


def register(sub) -> None:
    p = sub.add_parser("validate", help="validate data with Great Expectations (Data Docs + summary.json)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--data", help="a `searchr3 data build` output folder")
    target.add_argument("--dataset", help="an input dataset: a BEIR folder (corpus.jsonl, queries.jsonl, "
                                          "qrels/<split>.tsv), a Hugging Face dataset folder, or an NQ-open "
                                          ".jsonl[.gz] file")
    p.add_argument("--split", default="test", help="split of --dataset (default: test; NQ-open: train, test or all)")
    p.add_argument("--format", default="auto", choices=["auto", "beir", "hf", "nq_open"],
                   help="format of --dataset (default: auto, guessed from the path)")
    p.add_argument("--report-dir", default=None, help="where summary.json and data_docs/ go "
                                                      "(default: reports/validation)")
    p.set_defaults(func=_validate)


def _validate(args) -> int:
    from searchr3.validate.runner import validate_data, validate_dataset

    config = section(params_or_defaults(args), "validate", ValidateConfig)
    if args.data:
        summary = validate_data(args.data, config, args.report_dir)
    else:
        summary = validate_dataset(args.dataset, args.split, config, args.report_dir, fmt=args.format)
    for warning in summary.get("warnings", []):
        print(f"searchr3: warning: {warning} (see {summary['data_docs']})", file=sys.stderr)
    tables = summary["tables"]
    print(f"validation of {summary['target']} passed: {len(tables)} tables, "
          f"{sum(t['expectations'] for t in tables)} expectations, {summary['wall_seconds']} s; "
          f"Data Docs: {summary['data_docs']}")
    return 0
