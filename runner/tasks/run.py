"""Score one artifact on lm-eval tasks through its engine, cached per (artifact, engine, task, limit, lm-eval).

A finished task is a cache entry `tasks/<key>` (result.json: accuracy, stderr, per-item results). While
a task runs, every answer is appended to `<cache>/task-items/<answers key>/items.jsonl`; a re-run after a
kill (or with a larger eval.task_limit) reads them back and asks the engine only for the rest (lm-eval
itself cannot resume). They are deleted once a task has finished without a limit.
"""

import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from runner.cache import Cache
from runner.cache.lock import build_lock
from runner.engines import get_engine
from runner.system.packages import dist_versions
from runner.tasks.registry import METRIC, task_identity, task_spec

log = logging.getLogger(__name__)
PARTIAL = "task-items"


@dataclass
class TaskResult:
    task: str
    acc: float
    acc_stderr: float
    n: int
    seconds: float  # compute time of the run that finished it (0 when it was all resumed items)
    resumed: int  # answers read back from an interrupted run
    cache_hit: bool
    items: List[float]  # per-item accuracy, in lm-eval's doc order


def task_key(artifact, engine: str, device: str, task: str, limit: Optional[int], add_bos: Optional[bool]) -> str:
    """The finished task's cache entry; its answers in progress live under answers_key (the same without the limit)."""
    return Cache.key("task", answers_key(artifact, engine, device, task, add_bos), limit)


def answers_key(artifact, engine: str, device: str, task: str, add_bos: Optional[bool]) -> str:
    """Answers are keyed by their request's token ids: a run with another eval.task_limit reuses those made so far."""
    from runner.tasks.lm import MAX_LENGTH, TOKENIZATION

    return Cache.key(
        "task-answers",
        artifact.manifest["key"],
        engine,
        get_engine(engine).version(),
        device,  # CUDA kernels and CPU ones can pick different answers near a tie
        task_identity(task),
        dist_versions("lm-eval"),
        add_bos,
        MAX_LENGTH,
        TOKENIZATION,
    )


def run_tasks(
    artifact,
    model,
    engine: str,
    tasks: List[str],
    limit: Optional[int],
    hardware,
    cache: Cache,
    add_bos: Optional[bool] = None,
) -> Dict[str, TaskResult]:
    """Every task's result; the engine loads only if some task is not cached yet."""
    label = f"{artifact.manifest['format']} on {engine}"
    opened: dict = {}  # the engine and tokenizer, loaded by the first task that is not cached

    def compute(task: str, folder: Path) -> None:
        if not opened:
            from runner.tasks.lm import task_tokenizer

            opened["loaded"] = get_engine(engine).load(artifact, model, hardware)
            opened["tokenizer"] = task_tokenizer(model, add_bos)
        answers = answers_key(artifact, engine, hardware.device, task, add_bos)
        with build_lock(cache.memo_dir / PARTIAL, answers, f"the answers of {task} {label}"):  # runs of any limit
            _compute(opened["loaded"], opened["tokenizer"], task, limit, cache, folder, answers, label)
        opened.setdefault("built", set()).add(task)

    results = {}
    try:
        for task in tasks:
            key = task_key(artifact, engine, hardware.device, task, limit, add_bos)
            hit = cache.get_or_build("tasks", key, functools.partial(compute, task), label=f"{task} {label}")
            built = task in opened.get("built", ())
            if built and limit is None:  # every answer is now in the entry; a limited run's stay for a longer run
                answers = answers_key(artifact, engine, hardware.device, task, add_bos)
                with build_lock(cache.memo_dir / PARTIAL, answers, f"the answers of {task} {label}"):
                    shutil.rmtree(cache.memo_dir / PARTIAL / answers, ignore_errors=True)
            data = json.loads((hit / "result.json").read_text())
            results[task] = TaskResult(**{**data, "cache_hit": not built})
    finally:
        if "tokenizer" in opened:
            opened["tokenizer"].close()
        if "loaded" in opened:
            opened["loaded"].close()
    return results


def _compute(
    loaded, tokenizer, task: str, limit: Optional[int], cache: Cache, folder: Path, answers: str, label: str
) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from runner.tasks.lm import EngineLM, ItemStore

    partial = cache.memo_dir / PARTIAL / answers
    store = ItemStore(partial / "items.jsonl")
    if store.resumed:
        log.info("task %s (%s): resuming, %d answers kept from an interrupted run", task, label, store.resumed)
    start = time.perf_counter()
    try:
        out = lm_eval.simple_evaluate(
            model=EngineLM(loaded, tokenizer, store),
            tasks=[task_spec(task)],
            limit=limit,
            log_samples=True,
            task_manager=TaskManager(include_defaults=not isinstance(task_spec(task), dict)),
            bootstrap_iters=1000,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
    finally:
        store.close()
    seconds = time.perf_counter() - start
    metrics = out["results"][task]
    items = [float(s[METRIC]) for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]
    result = {
        "task": task,
        "acc": float(metrics[f"{METRIC},none"]),
        "acc_stderr": float(metrics[f"{METRIC}_stderr,none"]),
        "n": len(items),
        "seconds": seconds,
        "resumed": store.resumed,
        "items": items,
    }
    (folder / "result.json").write_text(json.dumps(result))
