"""A finished sweep's stamp: re-running an unchanged, finished sweep prints what it printed, in well under 2 s.

A sweep whose jobs all ran in the launching process (the basic launcher) and all FINISHED, whose decision was
made and whose MLflow store is a SQLite file leaves `multirun/.finished/<key>.json` in the folder it was
launched from: the summary and decision it printed, the files its jobs were decided from with their states
(runner/system/inputs.py), and the store file's state once the sweep had ended. The key covers what a re-run
could see differently before anything is composed: the command's arguments and folder, the environment
variables the runner and its libraries read, the contents of conf/ and of the runner package, the Python, every
installed package folder (and the other venvs, and the llama.cpp tools' build folder), and the host's CPU and
GPUs.

`qrun -m <the same arguments>` from the same folder whose key, files and store all still match prints that text
and exits 0 without composing the config, opening MLflow or checking each job again. Anything else -- another
argument, an edited config or source file, a package installed or removed, a changed model or text file, a store
that changed since (a run deleted, another sweep logged) -- takes the ordinary path, which checks every job
against the store and resumes the finished ones. `resume=false` never reads a stamp.
"""

import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import List, Optional

from runner.paths import CONF_DIR, PACKAGE_DIR, PROJECT_DIR
from runner.system import inputs
from runner.system.environment import host_identity
from runner.system.hashing import sha256_json
from runner.system.llama_cpp_tools import CACHE_ROOT as LLAMA_CPP_BUILDS
from runner.tracking import sqlite_path

FOLDER = Path("multirun") / ".finished"
ENV_PREFIXES = ("QRUN_", "MLFLOW_", "HYDRA_", "HF_", "CUDA_", "OMP_", "TRANSFORMERS_", "VLLM_", "LLAMA_")
MULTIRUN = ("-m", "--multirun")
_LAUNCH: dict = {}  # the key of the command this process was launched with


def replay(argv: List[str]) -> bool:
    """Print the stamped sweep's text and return True when `argv` re-runs an unchanged finished sweep. Called before
    anything runs: the key is computed here, as launched (libraries set environment variables as they load)."""
    _LAUNCH.clear()
    if not _stampable(argv):
        return False
    _LAUNCH["argv"] = list(argv)
    key = _LAUNCH["key"] = _key(argv)
    try:
        stamp = json.loads(_path(key).read_text())
    except (OSError, ValueError):
        return False
    if inputs.first_change({**stamp["inputs"], stamp["store"]: stamp["store_state"]}):
        return False
    print(
        f"nothing to run: this sweep finished unchanged at {stamp['finished']} (parent run {stamp['parent_run']} in "
        f"{stamp['uri']}); what it printed then follows",
        flush=True,
    )
    print(stamp["text"], flush=True)
    return True


def write(argv: List[str], launcher_target: str, tracking_uri: str, parent_run: str, text: str) -> Optional[Path]:
    """Stamp the sweep that just FINISHED (every job and the decision), where a re-run can be vouched for."""
    store = sqlite_path(tracking_uri)  # a server's store can change without any file here changing
    if (
        _LAUNCH.get("argv") != list(argv)  # not launched through replay() (which stamps plain sweeps only)
        or not launcher_target.endswith("BasicLauncher")  # jobs in other processes read files this one never saw
        or store is None
        or not store.is_file()
        or inputs.UNVERIFIABLE
    ):
        return None
    stamp = {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "parent_run": parent_run,
        "uri": tracking_uri,
        "text": text,
        "inputs": inputs.READ,
        "store": str(store.resolve()),
        "store_state": inputs.state(store),
    }
    path = _path(_LAUNCH["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, path)
    return path


def _stampable(argv: List[str]) -> bool:
    """A sweep of plain overrides: Hydra's own modes (--cfg, --help, -cd ...) and forced re-runs are not."""
    overrides = [a for a in argv if a not in MULTIRUN]
    return (
        len(overrides) < len(argv)
        and not any(a.startswith("-") for a in overrides)
        and not any(a.lstrip("+~").replace(" ", "").lower().startswith("resume=false") for a in overrides)
    )


def _path(key: str) -> Path:
    return Path.cwd() / FOLDER / f"{key}.json"


def _key(argv: List[str]) -> str:
    return sha256_json(
        {
            "argv": list(argv),
            "cwd": os.getcwd(),
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
            "code": _tree_sha256(PACKAGE_DIR, CONF_DIR),
            "python": [sys.executable, sys.version],
            "installed": _installed(),
            "host": [socket.gethostname(), host_identity()],
        }
    )[:32]


def _tree_sha256(*roots: Path) -> str:
    h = hashlib.sha256()
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode() + b"\0")
                h.update(p.read_bytes())
    return h.hexdigest()


def _installed() -> dict:
    """Each package folder's mtime: installing, upgrading or removing a package adds or removes entries there."""
    folders = [Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    folders += sorted(PROJECT_DIR.glob(".venv-*/lib/python*/site-packages")) + [LLAMA_CPP_BUILDS]
    return {str(f): f.stat().st_mtime_ns for f in folders if f.is_dir()}
