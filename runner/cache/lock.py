"""The build lock of one cache entry: workers that need the same entry at once build it once.

A lock is a folder `<kind>/.tmp-lock-<key>` holding its owner's `.owner.json` (host, pid, process
start time, pid namespace, a token). It is taken by renaming a folder that already holds that file
onto the lock's name: a rename onto a folder that is not empty fails, on local and network file
systems alike (NFS, Lustre, where fcntl locks depend on a lock daemon), so a lock never exists
without its owner. The owner refreshes the file's mtime every REFRESH_S while it builds. A waiter
takes over a lock whose owner died on its own host at once, and one held from another host once
that file has not changed for STALE_AFTER_S of the waiter's own clock (clocks of different hosts
are never compared).

The lock only saves work: the entry itself appears by an atomic rename (Cache.put), so in the rare
race where two workers both believe they hold a lock, both build and the first to finish is kept.
A build that fails releases the lock; the next waiter then tries the build itself.
"""

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

from runner.system.lifecycle import owner, owner_alive

log = logging.getLogger(__name__)
LOCK_PREFIX = ".tmp-lock-"
ASIDE_PREFIX = ".tmp-trash-lock-"  # a temp like any other: removed once its owner is dead
OWNER = ".owner.json"
REFRESH_S = 5.0
STALE_AFTER_S = 60.0
POLL_S = 0.2


def is_lock(path: Path) -> bool:
    return path.name.startswith(LOCK_PREFIX)


@contextlib.contextmanager
def build_lock(parent: Path, key: str, what: str) -> Iterator[None]:
    """Hold the lock of entry `key` in `parent` (waiting for another owner) while the block runs."""
    path = parent / f"{LOCK_PREFIX}{key}"
    token = _acquire(path, what)
    stop = threading.Event()
    refresher = threading.Thread(target=_refresh, args=(path, token, stop), name="qrun-cache-lock", daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join(timeout=5)
        _remove_if_held_by(path, token)


def remove_if_dead(path: Path) -> bool:
    """Remove a lock whose owner died on this host (as a waiter would take it over); True if it went."""
    holder = _holder(path)
    if not holder.get("token") or _stale(holder, (holder.get("mtime"), time.monotonic())) is None:
        return False
    _remove_if_held_by(path, holder["token"])
    return not path.exists()


def _acquire(path: Path, what: str) -> str:
    token = uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True)
    waiting_on: Optional[str] = None
    seen: tuple = (None, 0.0)  # (the owner file's mtime, when this process first saw that mtime)
    while True:
        candidate = path.parent / f"{ASIDE_PREFIX}{token}"
        candidate.mkdir(mode=0o755)
        (candidate / OWNER).write_text(json.dumps({**owner(), "token": token}))
        try:
            os.rename(candidate, path)
            return token
        except OSError:  # held: the lock's folder is there and holds its owner file
            shutil.rmtree(candidate, ignore_errors=True)
        holder = _holder(path)
        if holder.get("mtime") != seen[0]:
            seen = (holder.get("mtime"), time.monotonic())
        reason = _stale(holder, seen)
        if reason:
            log.warning("taking over the lock of %s: %s", what, reason)
            _remove_if_held_by(path, holder.get("token"))
            continue
        if waiting_on is None and holder:
            waiting_on = f"{holder.get('host', '?')}:{holder.get('pid', '?')}"
            log.info("waiting for %s, which is building %s", waiting_on, what)
        time.sleep(POLL_S)


def _holder(path: Path) -> dict:
    try:
        info = json.loads((path / OWNER).read_text())
        info["mtime"] = (path / OWNER).stat().st_mtime_ns
        return info
    except (OSError, ValueError):  # released (or taken over) a moment ago
        return {}


def _stale(holder: dict, seen: tuple) -> Optional[str]:
    """Why the lock's owner is gone, or None while it may still be building."""
    if not holder.get("token"):
        return None
    alive = owner_alive(holder.get("host"), holder.get("pid"), holder.get("start"), holder.get("pidns"))
    if alive is False:
        return f"its owner (pid {holder.get('pid')}) died"
    if alive is None and time.monotonic() - seen[1] > STALE_AFTER_S:
        return f"its owner on {holder.get('host')} has not refreshed it for {STALE_AFTER_S:.0f} s"
    return None


def _remove_if_held_by(path: Path, token: Optional[str]) -> None:
    """Remove the lock if `token` holds it: moved aside first (atomic), its token checked there, and put back
    if another worker took the lock in between."""
    aside = path.parent / f"{ASIDE_PREFIX}{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except OSError:
        return  # gone already
    if _token(aside) == token:
        shutil.rmtree(aside, ignore_errors=True)
        return
    try:
        os.rename(aside, path)
    except OSError:  # a third worker holds the lock now: the one moved aside is kept until its owner ends
        log.debug("a lock was taken twice; both holders build and the first entry to finish is kept")


def _token(path: Path) -> Optional[str]:
    try:
        return json.loads((path / OWNER).read_text()).get("token")
    except (OSError, ValueError):
        return None


def _refresh(path: Path, token: str, stop: threading.Event) -> None:
    while not stop.wait(REFRESH_S):
        if _token(path) == token:
            with contextlib.suppress(OSError):
                os.utime(path / OWNER)
