"""The stage cache: complete entries appear atomically; failures leave nothing behind."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT
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


def test_hash_memo_survives_the_rename(tmp_path, monkeypatch):
    from runner.system import hashing

    cache = Cache(tmp_path)
    with cache.put("artifacts", "k") as tmp:
        (tmp / "w.bin").write_bytes(b"z" * 100)
    monkeypatch.setattr(hashing, "_SEEN", {})  # as a new process would start
    hashed = _count_hashing(monkeypatch)
    assert cache.get("artifacts", "k") is not None
    assert hashed == []  # verification read the memo, hashed nothing


def _count_hashing(monkeypatch) -> list:
    """The files hashed from here on (the memo's misses)."""
    from runner.system import hashing

    calls: list = []
    real = hashing.hashlib.sha256

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(hashing.hashlib, "sha256", counting)
    monkeypatch.setattr(hashing, "sha256_bytes", lambda data: real(data).hexdigest())
    return calls


def test_hash_memo_holds_for_another_client_of_the_same_files(tmp_path, monkeypatch):
    """Another NFS client sees the same file under other device (and possibly inode) numbers, with the same
    path, size, mtime and ctime: it reuses the memo and hashes nothing again."""
    from runner.system import hashing

    cache = Cache(tmp_path)
    with cache.put("artifacts", "k") as tmp:
        (tmp / "w.bin").write_bytes(b"z" * 4096)
    weights = (tmp_path / "artifacts" / "k" / "w.bin").resolve()
    real_stat = Path.stat

    def as_another_client(self, *args, **kwargs):
        st = real_stat(self, *args, **kwargs)
        if self != weights:
            return st
        fields = list(st)
        fields[1], fields[2] = st.st_ino + 7, st.st_dev + 1  # st_ino, st_dev
        return os.stat_result(fields, {k: getattr(st, k) for k in ("st_mtime_ns", "st_ctime_ns", "st_atime_ns")})

    monkeypatch.setattr(Path, "stat", as_another_client)
    monkeypatch.setattr(hashing, "_SEEN", {})
    hashed = _count_hashing(monkeypatch)
    assert Cache(tmp_path).get("artifacts", "k") is not None
    assert hashed == []


def test_a_file_replaced_with_the_same_size_and_mtime_is_hashed_again(tmp_path, monkeypatch):
    """`cp -p` or `rsync -t` over a cached file keeps its size and mtime: the memo must not vouch for the new bytes."""
    from runner.system import hashing

    cache = Cache(tmp_path)
    with cache.put("artifacts", "k") as tmp:
        (tmp / "w.bin").write_bytes(b"z" * 4096)
    weights = tmp_path / "artifacts" / "k" / "w.bin"
    st = weights.stat()
    time.sleep(0.01)
    replacement = tmp_path / "other.bin"
    replacement.write_bytes(b"y" * 4096)
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, weights)
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    monkeypatch.setattr(hashing, "_SEEN", {})
    assert cache.get("artifacts", "k") is None  # its sha256 no longer matches: found corrupt, not vouched for


def _hash_in_child(memo_dir: str, files: list, go_at: float) -> None:
    from runner.system.hashing import sha256_file

    while time.time() < go_at:
        time.sleep(0.002)
    for f in files:
        sha256_file(Path(f), Path(memo_dir))


def test_concurrent_writers_of_the_hash_memo_lose_no_entry(tmp_path, monkeypatch):
    from runner.system import hashing

    files = []
    for i in range(40):
        f = tmp_path / "files" / f"f{i}.bin"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(os.urandom(1000))
        files.append(str(f))
    ctx = multiprocessing.get_context("fork")
    go_at = time.time() + 0.5
    workers = [ctx.Process(target=_hash_in_child, args=(str(tmp_path / "memo"), files[i::4], go_at)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    monkeypatch.setattr(hashing, "_SEEN", {})
    hashed = _count_hashing(monkeypatch)
    for f in files:
        hashing.sha256_file(Path(f), tmp_path / "memo")
    assert hashed == []  # all 40 remembered, whichever process wrote them


# --- temp folders: owned by a pid, never judged by age; the loser of a race uses the winner's entry ---


def _die_while(root, code: str) -> int:
    """Run `code` in a real process that SIGKILLs itself where the code says die(); returns its (now dead) pid."""
    prog = (
        f"import os, signal, sys\nfrom runner.cache import Cache\nroot = {str(root)!r}\n"
        f"def die():\n    print(os.getpid(), flush=True)\n    os.kill(os.getpid(), signal.SIGKILL)\n{code}"
    )
    proc = subprocess.run(
        [sys.executable, "-c", prog],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return int(proc.stdout.split()[0])


def _make_old(path, hours=2.0):
    """Older than the one-hour age rule of the old prune, so only ownership can save a temp."""
    t = time.time() - hours * 3600
    for p in [*path.rglob("*"), path]:
        os.utime(p, (t, t))


def _temps(root, kind="*"):
    return sorted(root.glob(f"{kind}/.tmp-*"))


def test_prune_keeps_a_live_writers_temp_removes_a_dead_ones_and_honours_kind(tmp_path):
    from runner.cache.cli import main as qrun_cache

    cache = Cache(tmp_path)
    _die_while(
        tmp_path,
        "with Cache(root).put('artifacts', 'a' * 32) as a, Cache(root).put('tokens', 'b' * 32) as t:\n"
        "    (a / 'w.bin').write_bytes(b'x' * 100)\n    die()",
    )
    assert len(_temps(tmp_path)) == 2
    with cache.put("artifacts", "c" * 32) as live:
        (live / "w.bin").write_bytes(b"y" * 100)
        for t in _temps(tmp_path):
            _make_old(t)
        assert qrun_cache(["--dir", str(tmp_path), "prune", "--kind", "artifacts"]) == 0
        assert live.exists()  # this process is alive and still writing
        assert len(_temps(tmp_path, "artifacts")) == 1  # the dead process's artifacts temp is gone
        assert len(_temps(tmp_path, "tokens")) == 1  # --kind artifacts: tokens untouched
        assert qrun_cache(["--dir", str(tmp_path), "prune", "--all"]) == 0
        assert live.exists() and not _temps(tmp_path, "tokens")
    assert cache.get("artifacts", "c" * 32) is not None and not _temps(tmp_path)


def test_prune_cleans_every_kind_of_temp(tmp_path):
    from runner.cache.cli import main as qrun_cache

    cache = Cache(tmp_path)
    with cache.put("artifacts", "k" * 32) as tmp:
        (tmp / "w.bin").write_bytes(b"x" * 100)
    # a process killed while deleting an entry (after moving it aside, before the files were gone)
    _die_while(
        tmp_path,
        "import shutil\nfrom runner.cache import _remove\nshutil.rmtree = lambda *a, **k: die()\n"
        f"_remove(Cache(root).get('artifacts', {'k' * 32!r}))",
    )
    trash = [p for p in tmp_path.glob("artifacts/.*") if p.is_dir()]
    assert len(trash) == 1 and cache.get("artifacts", "k" * 32) is None
    work = tmp_path / "exl2-measurements" / ".exl2-work-abc123"  # a work folder of an older version, no owner
    (work / "job").mkdir(parents=True)
    _make_old(work)
    assert qrun_cache(["--dir", str(tmp_path), "prune", "--kind", "artifacts"]) == 0
    assert not trash[0].exists()
    assert qrun_cache(["--dir", str(tmp_path), "prune", "--all"]) == 0
    assert not work.exists()


def test_next_cache_removes_dead_processes_temps_on_its_own(tmp_path):
    _die_while(
        tmp_path, "with Cache(root).put('models', 'm' * 32) as t:\n    (t / 'w.bin').write_bytes(b'x' * 100)\n    die()"
    )
    assert _temps(tmp_path)
    with Cache(tmp_path).put("models", "n" * 32) as live:  # a live writer's temp survives the next Cache()
        Cache(tmp_path)
        assert live.exists()
    assert not _temps(tmp_path)


def test_a_put_that_loses_the_race_uses_the_winners_entry(tmp_path):
    cache = Cache(tmp_path)
    key = Cache.key("race")
    armed = [True]

    def winner_finishes_first(event, args):
        # right before the first writer's rename, a second writer finishes the same entry
        if event == "os.rename" and armed[0] and Path(args[1]) == cache.root / "artifacts" / key:
            armed[0] = False
            with Cache(tmp_path).put("artifacts", key) as other:
                (other / "w.bin").write_bytes(b"same bytes")

    sys.addaudithook(winner_finishes_first)  # audit hooks cannot be removed: `armed` makes it inert after use
    try:
        with cache.put("artifacts", key) as mine:
            (mine / "w.bin").write_bytes(b"same bytes")
    finally:
        armed[0] = False
    entry = cache.get("artifacts", key)
    assert entry is not None and (entry / "w.bin").read_bytes() == b"same bytes"
    assert not _temps(tmp_path)
