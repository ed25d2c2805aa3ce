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


def test_corrupt_entry_is_detected_and_removed(tmp_path):
    cache = Cache(tmp_path)
    with cache.put("artifacts", "k") as tmp:
        (tmp / "w.bin").write_bytes(b"x" * 1000)
    path = cache.get("artifacts", "k")
    (path / "w.bin").write_bytes(b"y" * 1000)  # same size, other content
    assert cache.get("artifacts", "k") is None
    assert not (tmp_path / "artifacts" / "k").exists()


def test_truncated_file_and_missing_manifest_are_incomplete(tmp_path):
    cache = Cache(tmp_path)
    with cache.put("artifacts", "a") as tmp:
        (tmp / "w.bin").write_bytes(b"x" * 1000)
    with open(cache.get("artifacts", "a") / "w.bin", "r+b") as f:
        f.truncate(10)
    assert cache.get("artifacts", "a") is None
    (tmp_path / "artifacts" / "b").mkdir()  # looks like an entry, has no .entry.json (e.g. copied by hand)
    (tmp_path / "artifacts" / "b" / "w.bin").write_bytes(b"1")
    assert cache.get("artifacts", "b") is None


def test_hash_memo_survives_the_rename(tmp_path):
    from runner.hashing import _MEMO_NAME

    cache = Cache(tmp_path)
    with cache.put("artifacts", "k") as tmp:
        (tmp / "w.bin").write_bytes(b"z" * 100)
    memo = (tmp_path / _MEMO_NAME).read_text()
    cache.get("artifacts", "k")
    assert (tmp_path / _MEMO_NAME).read_text() == memo  # verification hashed nothing new
