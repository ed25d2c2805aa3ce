"""Which tasks eval.tasks may name: the offline ones shipped in runner/tasks/data/, or lm-eval's hub tasks.

An offline task is an lm-eval task YAML over a local JSON Lines file (dataset_path: json); its identity
in cache keys is the sha256 of both files. Hub tasks are lm-eval's own, read through `datasets` from
the Hugging Face hub: without the hub they stop before any work with one line naming the offline tasks.
"""

import hashlib
import os
from pathlib import Path
from typing import Dict, List

from runner.errors import UserError

DATA = Path(__file__).resolve().parent / "data"
HUB_TASKS = ("hellaswag", "arc_easy", "piqa", "winogrande", "mmlu")
METRIC = "acc"  # the accuracy each task reports; lm-eval's stderr of it is `acc_stderr`


def offline_tasks() -> List[str]:
    return sorted(p.stem for p in DATA.glob("*.yaml"))


def known_tasks() -> List[str]:
    return offline_tasks() + list(HUB_TASKS)


def task_spec(name: str):
    """What lm-eval's TaskManager loads: an offline task's config dict (absolute data path), or a hub task's name."""
    if name not in offline_tasks():
        return name
    import yaml

    config = yaml.safe_load((DATA / f"{name}.yaml").read_text())
    config["dataset_kwargs"]["data_files"] = str(DATA / config["dataset_kwargs"]["data_files"])
    return config


def task_identity(name: str) -> str:
    """sha256 of an offline task's YAML and data (what its items are); a hub task is its name (lm-eval's version pins
    it)."""
    if name not in offline_tasks():
        return name
    h = hashlib.sha256()
    config = (DATA / f"{name}.yaml").read_bytes()
    h.update(config)
    import yaml

    h.update((DATA / yaml.safe_load(config)["dataset_kwargs"]["data_files"]).read_bytes())
    return h.hexdigest()


def hub_reachable(timeout_s: float = 5.0) -> bool:
    if any(
        os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return False
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(
            urllib.request.Request(endpoint + "/api/datasets?limit=1", method="HEAD"), timeout=timeout_s
        )
        return True
    except Exception:
        return False


def check_tasks(tasks, task_limit) -> Dict[str, str]:
    """eval.tasks / eval.task_limit before any work: {task: 'offline'|'hub'}; UserError naming the key otherwise."""
    offline = offline_tasks()
    fix_offline = f"use eval.tasks=[{','.join(offline)}] (shipped with the runner, offline)"
    if task_limit is not None and task_limit < 1:
        raise UserError(
            "eval.task_limit", f"must be >= 1 or null (got {task_limit})", "set eval.task_limit=null for every item"
        )
    names = list(tasks or [])
    unknown = [t for t in names if t not in known_tasks()]
    if unknown:
        raise UserError("eval.tasks", f"unknown task(s) {unknown}", f"pick from {known_tasks()}")
    if len(set(names)) != len(names):
        raise UserError("eval.tasks", f"a task is listed twice in {names}", "name each task once")
    hub = [t for t in names if t not in offline]
    if hub and not hub_reachable():
        raise UserError("eval.tasks", f"{hub} need the Hugging Face hub, which is not reachable from here", fix_offline)
    return {t: "hub" if t in hub else "offline" for t in names}
