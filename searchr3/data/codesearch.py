"""The built-in code-search set: docstring summary -> function source, from the installed stdlib.

CodeSearchNet-style pairs built from ``sysconfig.get_paths()["stdlib"]`` so a fresh clone has
training and evaluation data without any download:

* every module-level function and class method (classes nested in classes included, functions
  nested in functions not) that has a docstring is a candidate;
* query = the docstring summary: its first paragraph (after a signature line), whitespace collapsed;
* document = the function's source (decorators included) with the docstring removed, dedented;
* filters: summary and source length bounds, no body left but ``pass``/``...``/``raise``, folders
  such as ``test/``, ``idlelib/``, ``lib2to3/``, ``site-packages/`` skipped;
* ambiguity: every function whose summary, or whose normalised source (whitespace collapsed),
  occurs more than once is dropped, so each query has exactly one right answer;
* split: ``sha256(seed, normalised source)`` assigns each function to train/dev/test, so no
  function is in two splits and the split of a function does not depend on the others;
* dev/test: the first ``*_docs`` functions of the split (in hash order) are the corpus, the first
  ``*_queries`` of those are the queries; train: up to ``train_pairs`` pairs.

The result depends only on the stdlib files and the seed: two builds are equal.
"""
from __future__ import annotations

import ast
import hashlib
import io
import platform
import re
import sysconfig
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from searchr3.data.errors import DataError
from searchr3.data.io import require_path
from searchr3.data.nq import stable_fraction
from searchr3.data.types import RetrievalSet
from searchr3.errors import ConfigError

SKIPPED_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo",
                          "ensurepip", "__pycache__", "__phello__", "config-3", "encodings", "pydoc_data"})
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Function:
    doc_id: str  # "<module path>:<qualified name>", e.g. "json/decoder.py:JSONDecoder.decode"
    summary: str
    source: str

    @property
    def key(self) -> str:
        return normalise(self.source)


def normalise(source: str) -> str:
    return " ".join(source.split())


def docstring_summary(doc: str, name: str | None = None) -> str:
    """First paragraph of a cleaned docstring, whitespace collapsed.

    A first paragraph that is the call signature (``name(args)``, a C-module habit) is skipped:
    it would hand the query the function's name. No other paragraph: the summary is empty.
    """
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc.strip())]
    if name and paragraphs and paragraphs[0].startswith(f"{name}("):
        paragraphs = paragraphs[1:]
    return paragraphs[0] if paragraphs else ""


def _trivial(body: list[ast.stmt]) -> bool:
    """A body with nothing but ``pass``, ``...`` or a bare ``raise`` (abstract stubs)."""
    for stmt in body:
        if isinstance(stmt, ast.Pass | ast.Raise):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        return False
    return True


def source_lines(text: str) -> list[str]:
    """``text`` cut into lines as ``ast`` numbers them: at newlines only. (``str.splitlines`` also cuts at form
    feeds and other separators, which the stdlib has between sections, and then every later line number is off.)"""
    return io.StringIO(text, newline="\n").readlines()


def _source_without_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    doc_node = node.body[0]
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    if doc_node.lineno == node.lineno or len(node.body) < 2:
        return None  # one-line def with its docstring, or nothing but the docstring
    body = lines[doc_node.end_lineno:node.end_lineno]
    while body and not body[0].strip():  # the blank line that often follows a docstring
        body = body[1:]
    header = lines[first - 1:doc_node.lineno - 1]
    return textwrap.dedent("".join(header + body)).strip("\n")


def functions_in_module(tree: ast.Module, lines: list[str], module: str) -> list[Function]:
    """Documented functions and methods of one parsed module (not functions nested in functions)."""
    found: list[Function] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=True)
                if not doc or _trivial(node.body):
                    continue
                source = _source_without_docstring(node, lines)
                if source:
                    found.append(Function(f"{module}:{prefix}{node.name}", docstring_summary(doc, node.name), source))

    visit(tree.body, "")
    return found


def stdlib_files(root: Path) -> list[Path]:
    """``.py`` files under ``root`` outside the skipped folders, in a fixed (sorted) order."""
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in SKIPPED_DIRS or p.startswith("config-3") for p in parts[:-1]):
            continue
        if parts[-1].startswith("test_") or not path.is_file():  # FIFOs, symlink loops, folders named *.py
            continue
        files.append(path)
    return files


def extract_functions(root: Path, progress: bool = False) -> tuple[list[Function], int]:
    """All candidate functions under ``root`` and the number of files that failed to parse."""
    functions: list[Function] = []
    unparsable = 0
    for path in tqdm(stdlib_files(root), desc="codesearch: parsing stdlib", disable=not progress):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text, filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            unparsable += 1
            continue
        module = path.relative_to(root).as_posix()
        functions.extend(functions_in_module(tree, source_lines(text), module))
    return functions, unparsable


def select_unambiguous(functions: list[Function], summary_chars: tuple[int, int],
                       source_chars: tuple[int, int]) -> tuple[list[Function], dict]:
    """Apply the length bounds, then drop every function whose summary or source is not unique."""
    sized = [f for f in functions
             if summary_chars[0] <= len(f.summary) <= summary_chars[1]
             and source_chars[0] <= len(f.source) <= source_chars[1]]
    summaries = Counter(f.summary.lower() for f in sized)
    sources = Counter(f.key for f in sized)
    unique = [f for f in sized if summaries[f.summary.lower()] == 1 and sources[f.key] == 1]
    # two functions may share a qualified name (e.g. defined in both branches of an ``if``)
    names = Counter(f.doc_id for f in unique)
    unique = [f for f in unique if names[f.doc_id] == 1]
    stats = {"candidates": len(functions), "within_length_bounds": len(sized),
             "dropped_ambiguous": len(sized) - len(unique), "unambiguous": len(unique)}
    return unique, stats


def assign_split(function: Function, seed: int, dev_fraction: float, test_fraction: float) -> str:
    u = stable_fraction(function.key, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


def _as_set(name: str, corpus_funcs: list[Function], query_funcs: list[Function], meta: dict) -> RetrievalSet:
    return RetrievalSet(
        name=name,
        corpus={f.doc_id: f.source for f in corpus_funcs},
        queries={f"q:{f.doc_id}": f.summary for f in query_funcs},
        qrels={f"q:{f.doc_id}": {f.doc_id: 1} for f in query_funcs},
        meta=meta,
    )


def build_codesearch(seed: int = 0, *, root: str | Path | None = None, test_queries: int = 200,
                     test_docs: int = 1000, dev_queries: int = 300, dev_docs: int = 500, train_pairs: int = 3000,
                     dev_fraction: float = 0.15, test_fraction: float = 0.3,
                     summary_chars: tuple[int, int] = (20, 300), source_chars: tuple[int, int] = (60, 3000),
                     progress: bool = False) -> dict[str, RetrievalSet]:
    """Build ``{"train", "dev", "test"}`` retrieval sets from the standard library under ``root``.

    ``root`` defaults to ``sysconfig.get_paths()["stdlib"]``. Query ids are ``"q:" + doc_id``.
    The train set's corpus is exactly its pairs' functions; dev/test corpora also hold the
    split's functions that are not queried, as distractors (up to ``*_docs``).
    """
    counts = {"test_queries": test_queries, "test_docs": test_docs, "dev_queries": dev_queries, "dev_docs": dev_docs,
              "train_pairs": train_pairs}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"codesearch option {key} must be a non-negative integer, got {value!r}")
    fractions = (dev_fraction, test_fraction)
    if not all(isinstance(f, int | float) and not isinstance(f, bool) for f in fractions) \
            or not (0 < dev_fraction and 0 < test_fraction and dev_fraction + test_fraction < 1):
        raise ConfigError("codesearch options dev_fraction and test_fraction must be positive and sum to less than 1")
    for label, q, d in (("test", test_queries, test_docs), ("dev", dev_queries, dev_docs)):
        if q > d:
            raise ConfigError(f"codesearch option {label}_queries ({q}) cannot exceed {label}_docs ({d})")
    root = require_path(root, folder=True) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    functions, unparsable = extract_functions(root, progress=progress)
    if not functions:
        raise DataError(root, None, "empty_file", f"no documented Python function found in {len(stdlib_files(root))} "
                                                  ".py files under this folder")
    unique, stats = select_unambiguous(functions, tuple(summary_chars), tuple(source_chars))
    by_split: dict[str, list[Function]] = {s: [] for s in SPLITS}
    for f in unique:
        by_split[assign_split(f, seed, dev_fraction, test_fraction)].append(f)
    for split in SPLITS:  # hash order, so a cap keeps a seeded random subset
        by_split[split].sort(key=lambda f: hashlib.sha256(f"{seed}\x01{f.key}".encode()).hexdigest())
    meta = {"format": "codesearch", "python": platform.python_version(), "stdlib": str(root), "seed": seed,
            "unparsable_files": unparsable, **stats, "available": {s: len(v) for s, v in by_split.items()}}
    train = by_split["train"][:train_pairs]
    test_corpus, dev_corpus = by_split["test"][:test_docs], by_split["dev"][:dev_docs]
    return {
        "train": _as_set("codesearch-train", train, train, {**meta, "split": "train"}),
        "dev": _as_set("codesearch-dev", dev_corpus, dev_corpus[:dev_queries], {**meta, "split": "dev"}),
        "test": _as_set("codesearch-test", test_corpus, test_corpus[:test_queries], {**meta, "split": "test"}),
    }
