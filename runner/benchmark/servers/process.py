"""A server as a child process: own process group, health wait, and a stop that leaves nothing behind.

The server runs in its own session (process group) so that stopping it reaches every process it
spawned, and a terminal's Ctrl-C goes to qrun only, which then stops the server itself (finally).
Stop = SIGTERM to the group, SIGKILL after a grace period, then SIGKILL to any straggler of the
group. An atexit hook covers interpreter exit, a SIGTERM handler (while a server runs; a job has
one for its whole run, runner/system/lifecycle.py) turns SIGTERM into an exception, and on Linux the
child gets PR_SET_PDEATHSIG (runner/benchmark/servers/_launch.py) so that even a SIGKILLed qrun takes its
server with it.
"""

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import httpx

from runner.errors import UserError
from runner.system import packages
from runner.system.lifecycle import Terminated

log = logging.getLogger(__name__)
_RUNNING: "set[ServerProcess]" = set()


@dataclass
class ServerSpec:
    """How to start one OpenAI-compatible server and what its requests need."""

    name: str  # e.g. "llama.cpp (llama_cpp.server)"
    cmd: List[str]
    host: str
    port: int
    health_path: str  # GET -> 200 once the model is loaded
    model: str  # the "model" field of requests
    env: Dict[str, str] = field(default_factory=dict)  # added to os.environ
    extra_body: Dict[str, object] = field(default_factory=dict)  # e.g. what makes it ignore EOS
    version: str = ""  # the server's version or build, as its run's tags name it
    settings: Dict[str, str] = field(default_factory=dict)  # the flags that decide its behaviour (slots, KV, dtype)
    prompt_ids: bool = False  # send prompts as the base model's token ids (the server's own tokenizer is not used)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def require_modules(modules, server: str) -> None:
    """One-line error naming what a server needs and is not installed (found without importing it)."""
    missing = packages.missing(modules)
    if missing:
        raise UserError(
            "benchmark.kind",
            f"{server} needs {', '.join(missing)}",
            "pip install -e '.[serving]' (part of the cpu extra)",
        )


def pick_port(host: str, port: int) -> int:
    """port 0: a free port on host; otherwise check that port is free (as the server would bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn does: a TIME_WAIT port is free
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(
                "benchmark.port",
                f"port {port} on {host} is already in use ({e.strerror})",
                "use benchmark.port=0 (a free port) or another port",
            ) from e
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, spec: ServerSpec, log_path: Path):
        self.spec, self.log_path = spec, Path(log_path)
        self.proc: Optional[subprocess.Popen] = None
        self.stopped_by_us = False  # False with an exit code: the server died on its own
        self._old_sigterm = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "runner.benchmark.servers._launch", *self.spec.cmd]
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1", "QRUN_SERVER_PARENT": str(os.getpid())}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        _RUNNING.add(self)
        if _is_main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        log.info(
            "started %s server, pid %d, on %s (log: %s)", self.spec.name, self.proc.pid, self.spec.url, self.log_path
        )
        return self

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds from start until GET health_path answers 200. Kills the server on timeout or exit."""
        start, url = time.perf_counter(), self.spec.url + self.spec.health_path
        with httpx.Client(trust_env=False, timeout=2.0) as client:  # trust_env=False: never via a proxy
            while True:
                code = self.proc.poll()
                if code is not None:
                    self.stop()
                    tail = self.log_tail()
                    if "address already in use" in tail.lower():
                        raise UserError(
                            "benchmark.port",
                            f"port {self.spec.port} on {self.spec.host} is already in use",
                            "use benchmark.port=0 (a free port) or another port",
                        )
                    raise RuntimeError(
                        f"the {self.spec.name} server exited with code {code} before it was healthy; "
                        f"log {self.log_path}:\n{tail}"
                    )
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - start
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - start > timeout_s:
                    self.stop()
                    raise UserError(
                        "benchmark.startup_timeout_s",
                        f"the {self.spec.name} server did not answer {self.spec.health_path} within {timeout_s:g} s "
                        f"(it was stopped; log: {self.log_path})",
                        "raise benchmark.startup_timeout_s, or read the log",
                    )
                time.sleep(0.25)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL after grace_s, then SIGKILL whatever is left of the group. Idempotent."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        if self.proc.poll() is None:
            self.stopped_by_us = True
            _killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s server (pid %d) ignored SIGTERM for %g s: SIGKILL", self.spec.name, pgid, grace_s)
                _killpg(pgid, signal.SIGKILL)
                self.proc.wait(10)
        _killpg(pgid, signal.SIGKILL)  # children that outlived the leader (e.g. vLLM's engine processes)
        _RUNNING.discard(self)
        if self._old_sigterm is not None and _is_main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        log.info("stopped %s server (pid %d, exit code %s)", self.spec.name, pgid, self.proc.returncode)

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_on_sigterm(signum, frame):
    raise Terminated("SIGTERM")  # unwinds through the finally blocks that stop the server


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(grace_s=3.0)
