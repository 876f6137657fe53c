"""searchr3.files: the one atomic writer (files and folders, durable where asked) and read-JSON-or-None."""
from __future__ import annotations

import json
import os
import stat

import pytest

from searchr3 import files
from searchr3.files import (atomic_directory, atomic_file, read_json_if_exists, write_json_atomic,
                            write_text_atomic)


class Crash(Exception):
    pass


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out" / "a.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(Crash):
        with atomic_file(path) as handle:
            handle.write('{"v": 2, "half')
            raise Crash
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(path.parent) == ["a.json"]  # no temporary file left behind
    write_json_atomic(path, {"v": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "v": "é"\n}\n'


def test_a_failed_rename_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    write_text_atomic(path, "old")

    def power_cut(src, dst):
        raise OSError("power cut before the rename")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["record.json"]


def test_json_formats(tmp_path):
    obj = {"b": 1, "a": "é"}
    assert files.json_text(obj) == '{\n  "b": 1,\n  "a": "é"\n}\n'
    assert files.json_text(obj, sort_keys=True, ascii_only=True) == '{\n  "a": "\\u00e9",\n  "b": 1\n}\n'


def test_binary_mode_and_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "v.bin", "wb") as handle:
            handle.write(b"\x00\x01")
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "v.bin").read_bytes() == b"\x00\x01"
    assert stat.S_IMODE((tmp_path / "v.bin").stat().st_mode) == 0o644  # not tempfile's private 0o600
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755  # not mkdtemp's 0o700
    with pytest.raises(ValueError, match="mode"):
        with atomic_file(tmp_path / "x", "a"):
            pass


def test_a_folder_is_swapped_whole_or_left_as_it_was(tmp_path):
    out = tmp_path / "snapshot"
    with atomic_directory(out) as tmp:
        (tmp / "one").write_text("1")
    with pytest.raises(Crash):
        with atomic_directory(out) as tmp:
            (tmp / "two").write_text("2")
            raise Crash
    assert sorted(p.name for p in out.iterdir()) == ["one"]
    with atomic_directory(out) as tmp:
        (tmp / "three").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["three"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot"]  # no building-/old- folders left


def test_durable_writes_fsync_the_data_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    write_json_atomic(tmp_path / "plain.json", {})
    assert synced == []  # not durable: no fsync
    write_json_atomic(tmp_path / "record.json", {}, durable=True)
    assert len(synced) == 2  # the file, then its folder after the rename
    synced.clear()
    with atomic_directory(tmp_path / "release", durable=True) as tmp:
        (tmp / "model").mkdir()
        (tmp / "model" / "w").write_text("w")
        (tmp / "dvc.lock").write_text("l")
    assert len(synced) == 5  # two files, two folders inside, then the parent after the rename


def test_read_json_if_exists(tmp_path):
    assert read_json_if_exists(tmp_path / "absent.json") is None
    assert read_json_if_exists(tmp_path) is None  # a folder is not a JSON file
    write_json_atomic(tmp_path / "m.json", {"ndcg@10": 0.5})
    assert read_json_if_exists(tmp_path / "m.json") == {"ndcg@10": 0.5}
