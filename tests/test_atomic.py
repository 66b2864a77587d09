"""Tests for kdtf.atomic: atomic, overwrite-safe writes."""
import os

import pytest

from kdtf import atomic


def _entries(directory):
    return sorted(os.listdir(directory))


def test_write_bytes_creates_file_without_leftovers(tmp_path):
    path = tmp_path / "model.bin"
    out = atomic.atomic_write_bytes(path, b"abc")
    assert out == str(path)
    assert path.read_bytes() == b"abc"
    assert _entries(tmp_path) == ["model.bin"]


def test_existing_file_is_not_overwritten_by_default(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite") as info:
        atomic.atomic_write_bytes(path, b"new")
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"old"
    assert _entries(tmp_path) == ["model.bin"]


def test_overwrite_replaces_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    atomic.atomic_write_bytes(path, b"new", overwrite=True)
    assert path.read_bytes() == b"new"
    assert _entries(tmp_path) == ["model.bin"]


def test_failure_inside_block_leaves_nothing(tmp_path):
    path = tmp_path / "model.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("boom")
    assert _entries(tmp_path) == []


def test_failure_keeps_existing_file_when_overwriting(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path, overwrite=True) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert _entries(tmp_path) == ["model.bin"]


def test_failure_during_fsync_leaves_nothing(tmp_path, monkeypatch):
    def fail(_):
        raise OSError("disk full")

    monkeypatch.setattr(atomic, "_fsync_path", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write_bytes(tmp_path / "model.bin", b"abc")
    assert _entries(tmp_path) == []


def test_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Nothing was written"):
        with atomic.atomic_path(tmp_path / "model.bin"):
            pass
    assert _entries(tmp_path) == []


def test_directory_write_and_overwrite(tmp_path):
    path = tmp_path / "saved"
    with atomic.atomic_path(path, directory=True) as tmp:
        assert os.path.isdir(tmp)
        (open(os.path.join(tmp, "a.txt"), "w")).close()
    assert _entries(path) == ["a.txt"]
    with pytest.raises(FileExistsError):
        with atomic.atomic_path(path, directory=True):
            pass
    with atomic.atomic_path(path, overwrite=True, directory=True) as tmp:
        (open(os.path.join(tmp, "b.txt"), "w")).close()
    assert _entries(path) == ["b.txt"]
    assert _entries(tmp_path) == ["saved"]


def test_directory_failure_keeps_old_directory(tmp_path):
    path = tmp_path / "saved"
    path.mkdir()
    (path / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path, overwrite=True, directory=True) as tmp:
            (open(os.path.join(tmp, "new.txt"), "w")).close()
            raise RuntimeError("boom")
    assert _entries(path) == ["old.txt"]
    assert _entries(tmp_path) == ["saved"]


def test_directory_replaces_file_and_file_replaces_directory(tmp_path):
    path = tmp_path / "artifact"
    path.write_bytes(b"file")
    with atomic.atomic_path(path, overwrite=True, directory=True) as tmp:
        (open(os.path.join(tmp, "x"), "w")).close()
    assert path.is_dir()
    atomic.atomic_write_bytes(path, b"file again", overwrite=True)
    assert path.read_bytes() == b"file again"
    assert _entries(tmp_path) == ["artifact"]


def test_missing_parent_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="parent directory"):
        atomic.atomic_write_bytes(tmp_path / "nope" / "m.bin", b"x")


def test_bad_arguments():
    with pytest.raises(TypeError, match="data"):
        atomic.atomic_write_bytes("/tmp/kdtf_unused.bin", "text")
    with pytest.raises(TypeError, match="path"):
        atomic.check_destination("")


def test_the_old_module_name_still_works_with_a_warning():
    import importlib
    import sys

    import pytest

    sys.modules.pop("kdtf.export.atomic", None)
    with pytest.warns(DeprecationWarning, match="kdtf.atomic"):
        old = importlib.import_module("kdtf.export.atomic")
    assert old.atomic_path is atomic.atomic_path
