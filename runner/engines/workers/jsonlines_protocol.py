"""The workers' side of the JSON-lines protocol (runner/engines/worker_client.py is the runner's side).

Standard library only: a worker runs as a script in another venv, whose python imports this file as a
sibling module (the script's folder is first on sys.path). One JSON object per line on stdin, one
answer per line on a private copy of the original stdout; fd 1 itself is pointed at stderr, where the
library's own logs and prints go.
"""

import json
import os
import sys
import time
from typing import Any, Callable, Dict


def answer(out, obj) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def serve(load: Callable[[], Any], ops: Dict[str, Callable[[Any, dict], Any]], ready: Callable[[], dict]) -> int:
    """load() the worker, answer {"ready": {"load_s", **ready()}}, then each request {"op": name, ...} with
    {"ok": ops[name](worker, request)} or {"error": "..."}, until {"op": "quit"} or the end of stdin."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    start = time.perf_counter()
    try:
        worker = load()
    except Exception as e:  # noqa: BLE001 (any failure to load is reported, then the worker exits)
        answer(out, {"error": f"{type(e).__name__}: {e}"})
        return 1
    answer(out, {"ready": {"load_s": time.perf_counter() - start, **ready()}})
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "quit":
            answer(out, {"ok": "bye"})
            break
        try:
            if op in ops:
                answer(out, {"ok": ops[op](worker, request)})
            else:
                answer(out, {"error": f"unknown op {op!r}"})
        except Exception as e:  # noqa: BLE001 (reported to the runner, which raises it)
            answer(out, {"error": f"{type(e).__name__}: {e}"})
    out.close()
    return 0
