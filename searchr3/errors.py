"""The errors a user can cause, each with its exit code (docs/errors.md lists them).

=====  ===============  ==========================================================================
code   class            meaning
=====  ===============  ==========================================================================
0      -                success
1      (anything else)  unexpected: a bug or an environment failure; ``--debug`` shows the traceback
2      ConfigError      usage or configuration: a bad argument, params file, profile, key or value
3      DataError        bad input data: a file breaks a rule (the message names file, line, rule)
4      ArtifactError    a damaged or missing pipeline artifact (model, index, data-stage output)
5      OutputBusy       another searchr3 process is writing the same output (stage lock held)
130    -                interrupted (Ctrl-C)
=====  ===============  ==========================================================================

``searchr3.cli`` turns any of these into one line on stderr, ``error: <what>`` plus what to do.
"""
from __future__ import annotations

import errno
from pathlib import Path

EXIT_OK, EXIT_UNEXPECTED, EXIT_CONFIG, EXIT_DATA, EXIT_ARTIFACT, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130


class SearchR3Error(Exception):
    """Base of the errors a user can fix; ``exit_code`` is what the CLI returns, ``hint`` what to do."""

    exit_code = EXIT_UNEXPECTED
    hint = ""

    def brief(self) -> str:
        """The error in one line (a validation failure overrides this with a summary of its report)."""
        return str(self)


class ConfigError(SearchR3Error, ValueError):
    """A bad parameters file, profile, key or value. ``file`` is filled in by whoever knows it."""

    exit_code = EXIT_CONFIG
    hint = "fix the parameters file or the command line; see docs/errors.md"

    def __init__(self, message: str, file: str | Path | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        super().__init__(message)

    def __str__(self) -> str:
        if self.file is None or self.message.startswith(self.file):
            return self.message
        return f"{self.file}{' ' if self.message.startswith('[') else ': '}{self.message}"


class DataError(SearchR3Error, ValueError):
    """An input file breaks a rule. ``str(err)`` reads ``FILE:LINE: RULE: detail``.

    ``rule`` is one of the names in :mod:`searchr3.data.rules` (the table in docs/errors.md).
    """

    exit_code = EXIT_DATA
    hint = "fix or remove what is named above; the rules are in docs/errors.md"

    def __init__(self, path: str | Path, line: int | None, rule: str, detail: str = ""):
        self.path = str(path)
        self.line = line
        self.rule = rule
        self.detail = detail
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {rule}" + (f": {detail}" if detail else ""))


class ArtifactError(DataError):
    """A pipeline output (model, index snapshot, data-stage folder) is missing or damaged."""

    exit_code = EXIT_ARTIFACT
    hint = "rebuild it with the stage that writes it, e.g. `dvc repro`, or restore it with `dvc checkout`"


class OutputBusy(SearchR3Error):
    """Another process holds the lock of an output this run would write (``searchr3.outputs``)."""

    exit_code = EXIT_BUSY
    hint = "wait for that run to finish (or stop it), then rerun; a killed run holds no lock"

    def __init__(self, output: str | Path, holder: str):
        self.output, self.holder = str(output), holder
        super().__init__(f"{output}: busy: another run is writing it ({holder})")


class OutputUnwritable(SearchR3Error):
    """An output folder does not accept new files; found before the stage does any work."""

    exit_code = EXIT_UNEXPECTED
    hint = "fix the folder's permissions or free disk space, then rerun; nothing was trained or written"

    def __init__(self, output: str | Path, folder: str | Path, err: OSError):
        self.output, self.folder = str(output), str(folder)
        what = err.strerror or type(err).__name__
        super().__init__(f"{folder}: not writable ({what}), so {output} could not be written; stopped before the work")


def exit_code(err: BaseException) -> int:
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return getattr(err, "exit_code", EXIT_UNEXPECTED) if isinstance(err, SearchR3Error) else EXIT_UNEXPECTED


def one_line(err: BaseException) -> str:
    """The single line the CLI prints for ``err`` (without the ``error:`` prefix)."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted; outputs are written atomically, so rerun the same command to continue"
    if isinstance(err, SearchR3Error):
        text = " ".join(err.brief().split())
        return f"{text} (hint: {err.hint})" if err.hint else text
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}no space left on device (free disk space and rerun: outputs are written atomically and " \
               "training resumes from its last checkpoint)"
    if isinstance(err, OSError) and err.filename is not None:
        what = err.strerror or type(err).__name__
        return f"{err.filename}: {what} [{type(err).__name__}] (check the path and its permissions; " \
               "--debug shows the traceback)"
    detail = " ".join(str(err).split()) or "(no message)"
    return (f"unexpected {type(err).__name__}: {detail[:500]} (this is a bug or an environment problem; "
            "rerun with --debug for the traceback and report it)")
