"""``searchr3`` command line: one short module per verb under ``searchr3.commands`` (Tevatron style).

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` to a callable taking the parsed args and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from searchr3.data.errors import DataError

COMMANDS = ["model", "data", "validate", "evaluate", "stage", "index", "search"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="searchr3", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--profile", default=None, help="profile in params.yaml to apply")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:  # a missing module is a broken install: it fails here, it is never skipped
        importlib.import_module(f"searchr3.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
