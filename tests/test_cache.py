"""The stage cache: complete entries appear atomically; failures leave nothing behind."""
import pytest

from runner.cache import Cache
from runner.errors import UserError


def test_entry_appears_only_when_complete(tmp_path):
    cache = Cache(tmp_path)
    key = Cache.key("x", 1)
    with cache.put("artifacts", key) as tmp:
        (tmp / "a.bin").write_bytes(b"123")
        assert cache.get("artifacts", key) is None
    assert (cache.get("artifacts", key) / "a.bin").read_bytes() == b"123"


def test_failure_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)
    with pytest.raises(RuntimeError):
        with cache.put("artifacts", "k") as tmp:
            (tmp / "half").write_bytes(b"1")
            raise RuntimeError("boom")
    assert cache.get("artifacts", "k") is None
    assert not list((tmp_path / "artifacts").iterdir())


def test_key_is_stable_and_order_sensitive():
    assert Cache.key("a", {"x": 1, "y": 2}) == Cache.key("a", {"y": 2, "x": 1})
    assert Cache.key("a", 1) != Cache.key("a", 2)


def test_mode_off_writes_to_scratch_only(tmp_path):
    cache = Cache(tmp_path / "root", mode="off", scratch=tmp_path / "scratch")
    with cache.put("artifacts", "k") as tmp:
        (tmp / "f").write_text("x")
    assert cache.get("artifacts", "k") == (tmp_path / "scratch" / "artifacts" / "k").resolve()
    assert not (tmp_path / "root").exists()


def test_unwritable_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # (chmod would not stop root, who runs CI)
    with pytest.raises(UserError, match="cache.dir"):
        Cache(blocker / "sub")


def test_unknown_mode(tmp_path):
    with pytest.raises(UserError, match="cache.mode"):
        Cache(tmp_path, mode="sometimes")
