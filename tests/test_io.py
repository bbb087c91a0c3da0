import pytest

from plotlib.io import atomic_path, write_json


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_atomically(tmp_path):
    target = tmp_path / "out.json"
    write_json({"a": 1}, target)
    write_json({"a": 2}, target)
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
