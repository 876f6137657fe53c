"""``searchr3 validate``: Great Expectations checks of the data stage output or of one BEIR folder."""
from __future__ import annotations

import sys

from searchr3.commands.data import params_or_defaults
from searchr3.config import section
from searchr3.validate.config import ValidateConfig


def register(sub) -> None:
    p = sub.add_parser("validate", help="validate data with Great Expectations (Data Docs + summary.json)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--data", help="a `searchr3 data build` output folder")
    target.add_argument("--dataset", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--split", default="test", help="qrels split of --dataset (default: test)")
    p.add_argument("--report-dir", default=None, help="where summary.json and data_docs/ go "
                                                      "(default: validate.report_dir, reports/validation)")
    p.set_defaults(func=_validate)


def _validate(args) -> int:
    from searchr3.validate.runner import ValidationFailed, validate_data, validate_dataset

    config = section(params_or_defaults(args), "validate", ValidateConfig)
    try:
        if args.data:
            summary = validate_data(args.data, config, args.report_dir)
        else:
            summary = validate_dataset(args.dataset, args.split, config, args.report_dir)
    except ValidationFailed as err:
        print(str(err), file=sys.stderr)
        return 1
    tables = summary["tables"]
    print(f"validation of {summary['target']} passed: {len(tables)} tables, "
          f"{sum(t['expectations'] for t in tables)} expectations, {summary['wall_seconds']} s; "
          f"Data Docs: {summary['data_docs']}")
    return 0
