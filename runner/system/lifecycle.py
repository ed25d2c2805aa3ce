"""Who owns a run or a temp folder, whether that owner still lives, and SIGTERM as an exception.

A pid means something only on the host that issued it, and only until it is reused: an owner is
(host, pid, process start time). Across hosts (shared storage, a shared MLflow store) liveness is
a heartbeat instead: a timestamp refreshed while the owner runs; older than LEASE_S means dead.
"""

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional

log = logging.getLogger(__name__)
HEARTBEAT_S = 30.0
LEASE_S = 300.0
HEARTBEAT_TAG = "qrun.heartbeat"  # unix time of the owner's last sign of life


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, SLURM preemption) as an exception: every `finally` and `except KeyboardInterrupt` cleanup runs."""


def owner() -> Dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid), "pidns": _pid_namespace()}


def owner_alive(host: Optional[str], pid, start=None, pidns: Optional[str] = None) -> Optional[bool]:
    """True/False for an owner on this host; None when it ran on another host (its pid means nothing here),
    or in another pid namespace of the same host name (containers sharing a host name or a network namespace)."""
    if host != socket.gethostname() or (pidns and pidns != _pid_namespace()):
        return None
    try:
        pid = int(pid or 0)
    except ValueError:
        return False
    if pid <= 0 or not _pid_alive(pid):
        return False
    now_start = _start_time(pid)
    if start not in (None, "", "None") and now_start is not None and int(start) != now_start:
        return False  # the pid was reused by another process
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_namespace() -> Optional[str]:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_time(pid: int) -> Optional[int]:
    """Start time of a process in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises Terminated in the main thread (once: a second SIGTERM does not
    interrupt the cleanup of the first). The previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class Heartbeat:
    """Calls beat() now and then every `every_s` seconds from a daemon thread until stop()."""

    def __init__(self, beat: Callable[[], None], every_s: float = HEARTBEAT_S):
        self._beat, self._every_s = beat, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="qrun-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._beat()
            except Exception as e:  # a busy or briefly unreachable store: the next beat tries again
                log.debug("heartbeat failed: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def orphan_reason(tags: Dict[str, str], now: Optional[float] = None) -> Optional[str]:
    """Why a RUNNING run (tags qrun.host/pid/pid_start/heartbeat) has no live owner, or None."""
    alive = owner_alive(tags.get("qrun.host"), tags.get("qrun.pid"), tags.get("qrun.pid_start"))
    if alive is False:
        return "the process running it died (e.g. SIGKILL)"
    beat = _heartbeat(tags)
    if alive is None and beat is not None:  # no heartbeat (a run of an older version): left alone
        age = (now or time.time()) - beat
        if age > LEASE_S:
            return (
                f"no heartbeat for {age:.0f} s (lease {LEASE_S:.0f} s): its process on "
                f"{tags.get('qrun.host', '?')} died or lost the store"
            )
    return None


def _heartbeat(tags: Dict[str, str]) -> Optional[float]:
    try:
        return float(tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return None


def owner_tags() -> Dict[str, str]:
    me = owner()
    return {
        "qrun.host": str(me["host"]),
        "qrun.pid": str(me["pid"]),
        "qrun.pid_start": str(me["start"]),
        HEARTBEAT_TAG: f"{time.time():.0f}",
        **placement_tags(),
    }


def placement_tags() -> Dict[str, str]:
    """Where in a cluster this process runs: its SLURM job and its Ray node, where it runs in one."""
    found = {}
    if os.environ.get("SLURM_JOB_ID"):
        found["qrun.slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    ray = sys.modules.get("ray")  # a Ray worker has imported it; nothing here imports Ray for this
    if ray is not None and ray.is_initialized():
        found["qrun.ray_node_id"] = ray.get_runtime_context().get_node_id()
    return found
