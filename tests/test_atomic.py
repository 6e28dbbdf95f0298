import errno

import pytest

from charlstm.atomic import atomic_write
from charlstm.errors import WriteError


def _full_disk(f):
    f.write(b"half of it")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_is_one_error_naming_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "config.json"
    with pytest.raises(WriteError) as e:
        atomic_write(target, _full_disk)
    assert str(e.value) == (
        f"{target}: cannot write (No space left on device); nothing was written. Free some disk space, or make "
        "the directory writable, and run again"
    )
    assert list(tmp_path.iterdir()) == []
    target.write_text("previous")
    with pytest.raises(WriteError, match="the previous file is kept"):
        atomic_write(target, _full_disk)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"] and target.read_text() == "previous"
    assert isinstance(e.value.__cause__, OSError)


def test_a_missing_directory_is_one_error(tmp_path):
    target = tmp_path / "gone" / "x.json"
    with pytest.raises(WriteError) as e:
        atomic_write(target, "{}")
    assert str(e.value).startswith(f"{target}: cannot write (No such file or directory); nothing was written")
