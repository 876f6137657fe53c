"""The built-in code-search set: extraction rules, ambiguity filter, deterministic disjoint splits."""
from __future__ import annotations

import ast
import platform
import textwrap
from pathlib import Path

import pytest

from searchr3.data.codesearch import (
    Function,
    build_codesearch,
    docstring_summary,
    functions_in_module,
    normalise,
    select_unambiguous,
    source_lines,
    stdlib_files,
)

MODULE = textwrap.dedent('''
    import functools


    @functools.lru_cache(maxsize=None)
    def cached_total(values):
        """Add up the values,
        caching the result.

        Longer explanation that is not part of the summary.
        """

        total = 0
        for v in values:
            total += v
        return total


    class Basket:
        def count_items(self):
            """Count the items in the basket."""
            return len(self.items)

        def abstract_hook(self):
            """Subclasses override this hook."""
            raise NotImplementedError

        class Inner:
            def describe(self):
                """Describe the inner part."""
                return "inner"


    def outer():
        """Outer function with a nested helper."""
        def helper():
            """Nested helpers are part of their parent, not pairs of their own."""
            return 1
        return helper()


    def one_liner(): "Docstring on the def line."; return 1


    def undocumented():
        return 2
''')


def extract(source: str = MODULE) -> dict[str, Function]:
    functions = functions_in_module(ast.parse(source), source.splitlines(keepends=True), "pkg/basket.py")
    return {f.doc_id: f for f in functions}


def test_summary_is_first_paragraph_with_whitespace_collapsed():
    assert docstring_summary("Add up the values,\n    caching the result.\n\nMore.") == \
        "Add up the values, caching the result."
    assert docstring_summary("  Single line.  ") == "Single line."
    assert docstring_summary("register(name, factory)\n\nRegister a factory.", "register") == "Register a factory."
    assert docstring_summary("register(name, factory)", "register") == ""


def test_functions_and_methods_are_extracted_without_docstrings():
    found = extract()
    assert sorted(found) == ["pkg/basket.py:Basket.Inner.describe", "pkg/basket.py:Basket.count_items",
                             "pkg/basket.py:cached_total", "pkg/basket.py:outer"]
    cached = found["pkg/basket.py:cached_total"]
    assert cached.summary == "Add up the values, caching the result."
    assert cached.source == ("@functools.lru_cache(maxsize=None)\ndef cached_total(values):\n    total = 0\n"
                             "    for v in values:\n        total += v\n    return total")
    assert found["pkg/basket.py:Basket.count_items"].source == "def count_items(self):\n    return len(self.items)"
    assert "Nested helpers" in found["pkg/basket.py:outer"].source  # the helper stays inside its parent


def test_a_form_feed_between_sections_does_not_shift_the_lines():
    """The stdlib puts form feeds (^L) between sections; ast counts lines at newlines only (seen: Debian's 3.11.2
    email/header.py gave Header.__str__ the four lines above it, its own docstring included)."""
    text = 'X = 1\n\x0c\ndef f(a):\n    """Double it."""\n    return 2 * a\n'
    assert source_lines(text) == ["X = 1\n", "\x0c\n", "def f(a):\n", '    """Double it."""\n', "    return 2 * a\n"]
    [found] = functions_in_module(ast.parse(text), source_lines(text), "m.py")
    assert (found.summary, found.source) == ("Double it.", "def f(a):\n    return 2 * a")


def test_ambiguous_summaries_and_sources_are_dropped():
    functions = [
        Function("m:a", "Return the first element of it.", "def a(x):\n    return x[0]  # first"),
        Function("m:b", "return the FIRST element of it.", "def b(x):\n    return x[0]  # first element"),
        Function("m:c", "Compute the second thing here.", "def c(x):\n    return x[1]"),
        Function("m:d", "Compute the third thing here.", "def c(x):\n        return x[1]"),  # same source as m:c
        Function("m:e", "Compute the fourth thing here.", "def e(x):\n    return x[3] if x else None"),
        Function("m:f", "Short.", "def f(x):\n    return x[4] if x else None"),
    ]
    kept, stats = select_unambiguous(functions, summary_chars=(10, 100), source_chars=(10, 100))
    assert [f.doc_id for f in kept] == ["m:e"]
    assert stats == {"candidates": 6, "within_length_bounds": 5, "dropped_ambiguous": 4, "unambiguous": 1}


def test_skipped_folders(tmp_path):
    for rel in ["json/decoder.py", "test/test_json.py", "idlelib/run.py", "lib2to3/main.py",
                "site-packages/foo/bar.py", "unittest/case.py", "email/test_utils.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in stdlib_files(tmp_path)] == \
        ["json/decoder.py", "unittest/case.py"]


@pytest.fixture(scope="module")
def stdlib_builds():
    """Two independent builds from the installed standard library (about 3 s each)."""
    return build_codesearch(seed=0), build_codesearch(seed=0)


def test_stdlib_build_is_deterministic(stdlib_builds):
    first, second = stdlib_builds
    for split in ("train", "dev", "test"):
        a, b = first[split], second[split]
        assert (list(a.corpus.items()), list(a.queries.items()), a.qrels, a.meta) == \
            (list(b.corpus.items()), list(b.queries.items()), b.qrels, b.meta)


def test_stdlib_build_sizes_and_meta(stdlib_builds):
    sets = stdlib_builds[0]
    assert (len(sets["test"].queries), len(sets["test"].corpus)) == (200, 1000)
    assert (len(sets["dev"].queries), len(sets["dev"].corpus)) == (300, 500)
    assert 1000 <= len(sets["train"].queries) <= 3000
    meta = sets["test"].meta
    assert meta["python"] == platform.python_version() and meta["seed"] == 0
    assert meta["available"]["test"] >= 1000 and meta["unambiguous"] == sum(meta["available"].values())


def test_stdlib_splits_are_disjoint_and_each_query_has_its_function(stdlib_builds):
    sets = stdlib_builds[0]
    keys = {s: {normalise(src) for src in rs.corpus.values()} for s, rs in sets.items()}
    assert keys["train"].isdisjoint(keys["dev"]) and keys["train"].isdisjoint(keys["test"])
    assert keys["dev"].isdisjoint(keys["test"])
    summaries = [t.lower() for rs in sets.values() for t in rs.queries.values()]
    assert len(summaries) == len(set(summaries))
    for rs in sets.values():
        for qid, judged in rs.qrels.items():
            assert judged == {qid[2:]: 1} and qid[2:] in rs.corpus
            assert rs.queries[qid] not in rs.corpus[qid[2:]]  # the docstring was removed from the document
        assert not any(Path(d.split(":")[0]).parts[0] in {"test", "idlelib", "lib2to3"} for d in rs.corpus)


def test_seed_changes_the_split(tmp_path):
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet".split()
    body = "\n".join(f'def f_{i}(v):\n    """Compute the {words[i % 10]} value number {i} now."""\n'
                     f"    total = v * {i} + len('{words[i // 10]}') - {i % 7}\n"
                     f"    return total if total > {i} else -total\n" for i in range(60))
    (tmp_path / "mod.py").write_text(body)
    kwargs = dict(root=tmp_path, test_queries=5, test_docs=5, dev_queries=2, dev_docs=2)
    a, b = build_codesearch(seed=0, **kwargs), build_codesearch(seed=1, **kwargs)
    assert set(a["test"].corpus) != set(b["test"].corpus)
    assert build_codesearch(seed=1, **kwargs)["test"].corpus == b["test"].corpus
