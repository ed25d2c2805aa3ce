"""The MLflow UI as a user sees it: serve a store on loopback, load the runs page in headless Chromium.

    python scripts/ui_check.py url   [--store sqlite:///mlflow.db] [--base http://127.0.0.1:5000]
    python scripts/ui_check.py check [--store sqlite:///mlflow.db] [--expect TEXT ...] [--screenshot out.png]

`url` prints the page `make ui` should be opened on (runs table, the runner's columns). `check`
starts `mlflow ui` on a free loopback port, loads that page in the system's Chromium (after the
React app has run), fails unless every --expect text is in the page, saves a screenshot and stops
the server by its pid. tests/test_mlflow_ui.py and tests/test_tracking_models.py use the functions.
"""

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from html import unescape
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# No GPU, no sandbox (root in a container), nothing fetched from outside loopback, a fresh profile.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_process(
    command: str, store: str, log_file: Path, extra: Sequence[str] = (), timeout: float = 180
) -> Iterator[str]:
    """`mlflow ui` or `mlflow server` on a free loopback port; yields its base URL, stops it by its pid."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    args = [
        str(mlflow),
        command,
        "--backend-store-uri",
        store,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *extra,
    ]
    with open(log_file, "w") as log:
        # its own session: the uvicorn workers it forks are stopped with it, and nothing else is
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc, log_file, timeout)
        yield base
    finally:
        _stop(proc)


def _wait_healthy(base: str, proc: subprocess.Popen, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow exited with {proc.returncode}: {log_file.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(base + "/health", timeout=5).read().strip() == b"OK":
                return
        time.sleep(1)
    raise RuntimeError(f"mlflow did not answer on {base} within {timeout:.0f} s: {log_file.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this process leads (start_new_session)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def experiment_id(store: str, name: str = "quant-runner") -> str:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=store).get_experiment_by_name(name)
    if exp is None:
        raise SystemExit(f"error: no experiment '{name}' in {store} -- fix: run a sweep first (make run)")
    return exp.experiment_id


def chromium(args: List[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: install the system package (apt-get install -y chromium; "
            "make test does it when run as root)"
        )
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_page(
    url: str, screenshot: Path, expected: Sequence[str] = (), tries: int = 3, size: str = "2400,1000"
) -> Tuple[str, str]:
    """(DOM, visible text) of the page after its JavaScript ran, and its screenshot.

    Virtual time lets the React app finish its requests before the DOM is read; on a loaded box the
    budget can still run out first, so the page is loaded again (longer budget) until every expected
    text is in it.
    """
    html = text = ""
    for attempt in range(tries):
        with tempfile.TemporaryDirectory(prefix="qrun-chromium-") as profile:
            proc = chromium(
                [
                    f"--virtual-time-budget={20000 * (attempt + 1)}",
                    f"--window-size={size}",
                    f"--screenshot={screenshot}",
                    "--dump-dom",
                    url,
                ],
                Path(profile),
            )
        html = proc.stdout
        visible = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
        text = unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", visible)))
        if all(e in text for e in expected):
            break
    if not screenshot.exists():
        raise RuntimeError(f"Chromium wrote no screenshot of {url}: {proc.stderr[-1000:]}")
    return html, text


def main(argv: Optional[List[str]] = None) -> int:
    sys.path.insert(0, str(ROOT))
    from runner.tracking import resolve_uri, ui_url

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["url", "check"])
    ap.add_argument("--store", default="sqlite:///mlflow.db")
    ap.add_argument("--experiment", default="quant-runner")
    ap.add_argument("--base", default="http://127.0.0.1:5000")
    ap.add_argument("--expect", nargs="*", default=[])
    ap.add_argument("--screenshot", type=Path, default=Path("mlflow_ui.png"))
    a = ap.parse_args(argv)
    store = resolve_uri(a.store)
    exp = experiment_id(store, a.experiment)
    if a.action == "url":
        print(f"MLflow UI (runs table, key columns): {ui_url(a.base, exp)}")
        return 0
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing -- fix: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d, mlflow_process("ui", store, Path(d) / "mlflow.log") as base:
        _, text = load_page(ui_url(base, exp), a.screenshot.resolve(), a.expect)
    missing = [e for e in a.expect if e not in text]
    print(f"screenshot: {a.screenshot.resolve()}")
    if missing:
        print(f"error: not in the page: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
