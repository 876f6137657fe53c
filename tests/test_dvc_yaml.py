"""dvc.yaml without running the pipeline: the stages are the library's, each runs through bin/searchr3, each lists
exactly the searchr3 modules it imports (walked from the stage function's source, not from a list kept here), its
data deps are earlier stages' outputs; `dvc status` marks the stages that use an edited prompt template; and the
launcher finds the CLI without an activated virtual environment."""
from __future__ import annotations

import ast
import functools
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from searchr3 import stages

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "searchr3"
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
TEMPLATE_LINE = "Please represent the passage for retrieval."


# --- which of our modules a stage runs: an AST walk --------------------------------------------------------------


def module_file(name: str) -> Path | None:
    """``searchr3.a.b`` → ``searchr3/a/b.py`` or ``searchr3/a/b/__init__.py``; None when it names no module."""
    base = ROOT.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def loaded_by(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``."""
    parts = name.split(".")
    return [n for n in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if module_file(n)]


def imported(nodes, current: str, is_package: bool) -> set[str]:
    """Our modules loaded by the import statements among ``nodes`` (absolute and relative imports)."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = current if is_package else current.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from a import b`: b may be a module
        else:
            continue
        for name in names:
            if name.split(".")[0] == PACKAGE and module_file(name):
                found.update(loaded_by(name))
    return found


def module_level(tree: ast.AST):
    """The nodes that run when the module is imported: everything outside function bodies."""
    for node in ast.iter_child_nodes(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield node
            yield from module_level(node)


def stage_roots(fn) -> tuple[str, set[str]]:
    """The stage function's module, and what running the function loads: that module's import-time imports, the
    imports inside the function and inside the same module's functions it calls by name (transitively)."""
    fn = inspect.unwrap(fn)  # a stage decorated with searchr3.outputs.writes: its own code
    path = Path(inspect.getsourcefile(fn))
    current, is_package = module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    roots = imported(module_level(tree), current, is_package) | set(loaded_by(current))
    seen, todo = set(), [fn.__name__]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        body = list(ast.walk(functions[name]))
        roots |= imported(body, current, is_package)
        todo += [n.id for n in body if isinstance(n, ast.Name) and n.id in functions]
    return current, roots


@functools.cache
def stage_code(stage: str) -> frozenset[str]:
    """Every file of searchr3/ that ``searchr3 stage STAGE`` runs. A library module counts with every import it
    holds, at any depth (a function-level import runs when that function is called); a module that holds other
    stages' functions counts with its import-time imports only (those functions do not run)."""
    current, todo = stage_roots(getattr(stages, stage))
    stage_modules = {getattr(stages, s).__module__ for s in stages.STAGES} - {current}
    seen = {current}
    todo = list(todo - seen)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        tree = ast.parse(path.read_text())
        nodes = module_level(tree) if name in stage_modules else ast.walk(tree)
        todo += imported(nodes, name, path.name == "__init__.py") - seen
    return frozenset(str(module_file(n).relative_to(ROOT)) for n in seen)


def python_files(path: str) -> set[str]:
    p = ROOT / path
    return {str(f.relative_to(ROOT)) for f in p.rglob("*.py")} if p.is_dir() else {path}


def code_deps(stage: str) -> list[str]:
    return [d for d in PIPELINE[stage]["deps"] if d.split("/")[0] == PACKAGE]


def shortest_cover(files: set[str]) -> list[str]:
    """The deps to write for ``files``: a folder when every .py file under it is needed, else the files."""
    out: list[str] = []

    def visit(folder: Path) -> None:
        for child in sorted(folder.iterdir()):
            rel = str(child.relative_to(ROOT))
            if child.is_dir() and child.name != "__pycache__":
                inside = python_files(rel)
                if inside and inside <= files:
                    out.append(rel)
                elif inside & files:
                    visit(child)
            elif rel in files:
                out.append(rel)

    visit(ROOT / PACKAGE)
    return out


# --- the static checks ---------------------------------------------------------------------------------------------


def test_the_stages_are_the_library_stages_in_order():
    assert tuple(PIPELINE) == stages.STAGES


def test_every_stage_runs_its_function_through_the_launcher():
    for name, stage in PIPELINE.items():
        assert stage["cmd"].split()[:3] == ["bin/searchr3", "stage", name], stage["cmd"]
    launcher = ROOT / "bin" / "searchr3"
    assert launcher.is_file() and os.access(launcher, os.X_OK)


def test_each_stage_lists_exactly_the_searchr3_code_it_imports():
    problems = []
    for stage in stages.STAGES:
        needed, deps = stage_code(stage), code_deps(stage)
        listed = set().union(*(python_files(d) for d in deps)) if deps else set()
        missing = sorted(needed - listed)
        absent = [d for d in deps if not (ROOT / d).exists()]
        unneeded = sorted(d for d in deps if (ROOT / d).exists() and not python_files(d) <= needed)
        if missing or absent or unneeded:
            problems.append(f"{stage}: missing {missing}, not found {absent}, not imported {unneeded}; "
                            f"write: {shortest_cover(needed)}")
    assert not problems, "dvc.yaml code deps disagree with the imports:\n" + "\n".join(problems)


def test_the_walk_sees_what_each_stage_really_uses():
    """The walk itself, on facts that hold whatever the layout: the templates module, the config loader and the
    stage's trainer are found; a stage does not drag in the code of unrelated stages."""
    for stage in stages.STAGES:
        code = stage_code(stage)
        assert "searchr3/config.py" in code, stage
        assert ("searchr3/model/config.py" in code) == (stage != "sources"), stage  # hashing files needs no model
        assert inspect.getsourcefile(getattr(stages, stage)).endswith(tuple(code)), stage
    assert {"searchr3/train/sft.py"} <= stage_code("sft") and "searchr3/train/grpo.py" not in stage_code("sft")
    assert "searchr3/train/grpo.py" in stage_code("rl") and "searchr3/train/sft.py" not in stage_code("rl")
    assert not any(f.startswith("searchr3/train/") for f in stage_code("base_model") | stage_code("evaluate"))
    assert not any(f.startswith("searchr3/validate/") for f in stage_code("sft"))


def outputs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o
            for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]


def test_data_deps_are_outputs_of_earlier_stages():
    made: list[str] = []
    for name, stage in PIPELINE.items():
        for dep in stage["deps"]:
            if dep.split("/")[0] != PACKAGE:
                assert any(dep == out or dep.startswith(out + "/") for out in made), f"{name}: {dep}"
        made += outputs(stage)


# --- what DVC itself reports -----------------------------------------------------------------------------------


def dvc(args: list[str], cwd: Path, env: dict | None = None, dvc_bin: str | None = None) -> str:
    argv = [dvc_bin] if dvc_bin else [sys.executable, "-m", "dvc"]
    proc = subprocess.run([*argv, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


def copy_pipeline(repo: Path, profile: str = "default") -> Path:
    """dvc.yaml, params.yaml, the launcher and the library in a new DVC repo (no git)."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("bin", PACKAGE):
        shutil.copytree(ROOT / folder, repo / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = profile
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(["init", "--no-scm", "-q"], repo)
    return repo


def changed_stages(repo: Path) -> set[str]:
    import json

    always = {name for name, stage in PIPELINE.items() if stage.get("always_changed")}  # the sources' fingerprint
    return set(json.loads(dvc(["status", "--json"], repo) or "{}")) - always


def test_editing_a_prompt_template_marks_the_stages_that_use_it_as_changed(tmp_path):
    """Placeholder outputs and `dvc commit` stand in for a run (the pipeline's real repro is a slow test)."""
    repo = copy_pipeline(tmp_path)
    for stage in PIPELINE.values():
        for out in outputs(stage):
            path = repo / out
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder").write_text("x\n")
    for sub in ("train", "train_corpus", "eval"):
        (repo / "data" / sub).mkdir(parents=True, exist_ok=True)
        (repo / "data" / sub / "placeholder").write_text("x\n")
    dvc(["commit", "--force", "-q"], repo)
    assert changed_stages(repo) == set()

    templates = repo / "searchr3" / "model" / "config.py"
    source = templates.read_text()
    assert TEMPLATE_LINE in source
    templates.write_text(source.replace(TEMPLATE_LINE, "Represent the passage."))
    using = {s for s in stages.STAGES if "searchr3/model/config.py" in stage_code(s)}
    assert {"traces", "sft", "rl", "index", "evaluate"} <= using  # every stage that embeds text
    assert changed_stages(repo) == using
    templates.write_text(source)
    assert changed_stages(repo) == set()

    # The template as params.yaml sets it: the stages that read the `model:` section.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["templates"]["document"] = params["model"]["templates"]["document"].replace(
        TEMPLATE_LINE, "Represent the passage.")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    reading_model = {name for name, s in PIPELINE.items() if {"model", "model.templates"} & set(s["params"])}
    assert {"traces", "sft", "rl", "index", "evaluate"} <= reading_model
    assert changed_stages(repo) == reading_model


# --- the launcher ------------------------------------------------------------------------------------------------


def bare_env() -> dict[str, str]:
    """This environment as a new shell has it: no virtual environment activated, only system directories on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "SEARCHR3_PROFILE", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    return env


def test_venv_dvc_runs_a_stage_without_an_activated_venv(tmp_path):
    """`.venv/bin/dvc repro` from a shell where nothing is activated: bin/searchr3 finds the repo's .venv."""
    venv = Path(sys.prefix)
    assert (venv / "bin" / "dvc").exists(), "the tests run from the project's virtual environment"
    repo = copy_pipeline(tmp_path, profile="tiny")
    (repo / ".venv").symlink_to(venv, target_is_directory=True)
    out = dvc(["repro", "base_model"], repo, env=bare_env(), dvc_bin=str(repo / ".venv" / "bin" / "dvc"))
    assert "Running stage 'base_model'" in out
    assert (repo / "models" / "base" / "config.json").exists()


def test_launcher_without_an_environment_says_what_to_do(tmp_path):
    shutil.copytree(ROOT / "bin", tmp_path / "bin")
    proc = subprocess.run([str(tmp_path / "bin" / "searchr3"), "--help"], cwd=tmp_path, env=bare_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 127
    assert "run `make install`" in proc.stderr and str(tmp_path / ".venv") in proc.stderr


def test_a_stage_run_by_dvc_refuses_a_profile_dvc_cannot_see(tmp_path, monkeypatch, capsys):
    """SEARCHR3_PROFILE=tiny with params.yaml's `profile: default` would lock tiny outputs as default ones."""
    from searchr3.cli import main
    from searchr3.config import profile_mismatch

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    monkeypatch.setenv("SEARCHR3_PROFILE", "tiny")
    monkeypatch.setenv("DVC_STAGE", "base_model")
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(params), "stage", "base_model"]) == 2
    err = capsys.readouterr().err
    assert "SEARCHR3_PROFILE=tiny" in err and "profile: default" in err and "make run PROFILE=tiny" in err
    assert not (tmp_path / "models").exists()
    monkeypatch.setenv("SEARCHR3_PROFILE", "default")
    assert profile_mismatch(params) is None
