"""A worker subprocess that answers JSON lines: one request per line on its stdin, one answer per line on its
stdout ({"ok": ...}, {"ready": ...} or {"error": ...}); its stderr goes to the job log, the last lines kept for
errors. The engines that run in another venv (vLLM, OpenVINO) talk to their worker through this."""

import json
import logging
import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Dict, List, Optional, Tuple

log = logging.getLogger(__name__)


class JsonLinesWorker:
    def __init__(
        self, name: str, python: Path, script: Path, args: List[str], env: Dict[str, str], cwd: Path, label: str
    ):
        self.name, self.label = name, label
        self._stderr_tail: deque = deque(maxlen=40)
        # through runner.benchmark.servers._launch (parent-death signal): a killed runner never leaves a worker behind
        cmd = [sys.executable, "-m", "runner.benchmark.servers._launch", str(python), str(script), *args]
        self.proc = subprocess.Popen(
            cmd,
            env={**env, "QRUN_SERVER_PARENT": str(os.getpid())},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(cwd),
        )
        threading.Thread(target=self._forward_stderr, daemon=True).start()
        self.ready = self._read()["ready"]

    def last_output(self, lines: Optional[int] = None) -> str:
        tail = list(self._stderr_tail)
        return "\n".join(tail[-lines:] if lines else tail)

    def _forward_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr_tail.append(line.rstrip())
            log.debug("%s worker: %s", self.name, line.rstrip())
            self.on_stderr_line(line)

    def on_stderr_line(self, line: str) -> None:
        """A subclass reads what its library reports only in its log (vLLM's KV cache size)."""

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(
                f"the {self.name} worker ({self.label}) exited with code {code} before answering; "
                f"its last output:\n{self.last_output()}"
            )
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(
                f"the {self.name} worker ({self.label}) failed: {answer['error']}; its last output:\n"
                + self.last_output(10)
            )
        return answer

    def call(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()["ok"]

    def stop(self, timeout_s: float = 60.0) -> Tuple[int, bool]:
        """Ask the worker to quit and wait (kill after timeout_s): (exit code, whether it answered the quit)."""
        answered = False
        if self.proc.poll() is None:
            try:
                answered = self.call(op="quit") == "bye"
            except (BrokenPipeError, RuntimeError, ValueError):
                pass
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, answered
