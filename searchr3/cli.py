"""``searchr3`` command line: one short module per verb under ``searchr3.commands`` (Tevatron style).

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` to a callable taking the parsed args and returning an exit code.

Errors: every failure ends in one line on stderr, ``searchr3: error: <what>`` with what to do, and
a documented exit code (:mod:`searchr3.errors`, docs/errors.md): 2 usage or configuration, 3 bad
data, 4 damaged artifact, 1 unexpected. ``--debug`` (or ``SEARCHR3_DEBUG=1``) adds the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

from searchr3.config import add_overrides_argument
from searchr3.errors import EXIT_CONFIG, ConfigError, exit_code, one_line


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit code 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_CONFIG, f"searchr3: error: {message} (see `{self.prog} --help`)\n")


COMMANDS = ["model", "data", "validate", "evaluate", "stage", "index", "search", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="searchr3", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--profile", default=None, help="profile in params.yaml to apply")
    add_overrides_argument(parser, "; refused for a stage that dvc repro runs")
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("SEARCHR3_DEBUG")),
                        help="on an error, also print the Python traceback (or set SEARCHR3_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:  # a missing module is a broken install: it fails here, it is never skipped
        importlib.import_module(f"searchr3.commands.{name}").register(sub)
    return parser


def report_error(err: BaseException, args: argparse.Namespace) -> int:
    """Print ``err`` as one line on stderr (a validation report first, on stdout); return its exit code."""
    if isinstance(err, ConfigError) and err.file is None and Path(args.params).is_file():
        err.file = args.params  # the error came from the parameters file the command read
        if args.profile or os.environ.get("SEARCHR3_PROFILE"):
            err.message += f" (profile {args.profile or os.environ['SEARCHR3_PROFILE']})"
    if isinstance(err, ConfigError) and args.overrides and "--set" not in err.message:
        err.message += " (with --set " + ", ".join(f"{k}={v!r}" for k, v in args.overrides.items()) + ")"
    if args.debug:
        traceback.print_exception(err)
    report = getattr(err, "report", None)
    if report:
        print(report, flush=True)
    print(f"searchr3: error: {one_line(err)}", file=sys.stderr, flush=True)
    return exit_code(err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `searchr3 ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - the one place every error becomes one line
        return report_error(err, args)


if __name__ == "__main__":
    sys.exit(main())
