"""An entry's build lock: workers that need the same entry at once build it once; a dead owner's lock is taken over."""

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from pathlib import Path

from runner.cache import Cache
from runner.cache import lock as cache_lock

KEY = "0123456789abcdef0123456789abcdef"
FORK = multiprocessing.get_context("fork")  # runner.cache imports no thread pool: forking it is safe


def _build_in_child(root: str, builds: str, results: str, go_at: float, build_s: float) -> None:
    while time.time() < go_at:  # all workers ask at the same moment
        time.sleep(0.002)

    def build(folder: Path) -> None:
        with open(builds, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(build_s)
        (folder / "reference.txt").write_text(f"built by {os.getpid()}")

    path = Cache(root).get_or_build("references", KEY, build)
    with open(results, "a") as f:
        f.write(json.dumps({"path": str(path), "text": (path / "reference.txt").read_text()}) + "\n")


def test_eight_workers_needing_one_entry_build_it_once(tmp_path):
    builds, results = tmp_path / "builds.txt", tmp_path / "results.jsonl"
    go_at = time.time() + 1.0
    workers = [
        FORK.Process(target=_build_in_child, args=(str(tmp_path / "c"), str(builds), str(results), go_at, 1.0))
        for _ in range(8)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    assert len(builds.read_text().splitlines()) == 1
    seen = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(seen) == 8 and len({(s["path"], s["text"]) for s in seen}) == 1
    assert not list((tmp_path / "c" / "references").glob(".tmp-*"))  # no lock or temp left behind


def _hold_and_hang(root: str, started: str) -> None:
    def build(folder: Path) -> None:
        Path(started).write_text("building")
        time.sleep(600)

    Cache(root).get_or_build("references", KEY, build)


def test_a_lock_whose_owner_was_killed_is_taken_over_at_once(tmp_path):
    started = tmp_path / "started"
    owner = FORK.Process(target=_hold_and_hang, args=(str(tmp_path / "c"), str(started)))
    owner.start()
    deadline = time.time() + 30
    while not started.exists():
        assert time.time() < deadline and owner.is_alive()
        time.sleep(0.05)
    os.kill(owner.pid, signal.SIGKILL)
    owner.join(10)

    begin = time.monotonic()
    path = Cache(tmp_path / "c").get_or_build("references", KEY, lambda f: (f / "reference.txt").write_text("mine"))
    assert time.monotonic() - begin < 5  # its owner is known dead on this host: no waiting for staleness
    assert (path / "reference.txt").read_text() == "mine"


def _foreign_lock(parent: Path) -> Path:
    """A lock as another host's worker leaves it: its pid means nothing here, only its refreshes do."""
    lock = parent / f"{cache_lock.LOCK_PREFIX}{KEY}"
    lock.mkdir(parents=True)
    (lock / cache_lock.OWNER).write_text(json.dumps({"host": f"not-{socket.gethostname()}", "pid": 1, "token": "x"}))
    return lock


def test_another_hosts_lock_is_taken_over_only_once_its_refreshes_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_lock, "STALE_AFTER_S", 1.0)
    monkeypatch.setattr(cache_lock, "POLL_S", 0.05)
    lock = _foreign_lock(tmp_path / "c" / "references")
    refreshing = threading.Event()
    refreshing.set()

    def refresh() -> None:  # the other host is alive for 2.5 s, then goes silent (its lock stays)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            os.utime(lock / cache_lock.OWNER, ns=(time.time_ns(), time.time_ns()))
            time.sleep(0.2)
        refreshing.clear()

    threading.Thread(target=refresh, daemon=True).start()
    built_while_refreshed = []

    def build(folder: Path) -> None:
        built_while_refreshed.append(refreshing.is_set())
        (folder / "reference.txt").write_text("mine")

    path = Cache(tmp_path / "c").get_or_build("references", KEY, build)
    assert built_while_refreshed == [False]  # never built beside a live owner, built after it went silent
    assert (path / "reference.txt").read_text() == "mine"


def test_a_failed_build_releases_the_lock_and_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path / "c")

    def fail(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("the library crashed")

    try:
        cache.get_or_build("references", KEY, fail)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the build's error was swallowed")
    assert cache.get("references", KEY) is None
    assert not list((tmp_path / "c" / "references").glob(".*"))
    path = cache.get_or_build("references", KEY, lambda f: (f / "reference.txt").write_text("second try"))
    assert (path / "reference.txt").read_text() == "second try"
