"""Parallel jobs on one GPU machine (hydra/launcher=local_parallel, joblib): each job its own cards.

The machine's visible cards are cut into slots of the profile's n_gpus cards (cards 0-1, 2-3, ... for n_gpus=2).
A joblib worker process claims a free slot before its first job (an exclusive flock on <sweep dir>/gpu_slot_<k>.lock)
and sets CUDA_VISIBLE_DEVICES to that slot's cards before anything initializes CUDA; it keeps the slot until it
exits (the kernel drops the lock then, a crash included), because a process that has initialized CUDA cannot move
to other cards. Two jobs never share a card, and a worker that finds every slot taken waits for one. The launcher's
n_jobs is capped at the number of slots (parallel_gpu_jobs), so no worker waits for long.
"""

import fcntl
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

_HELD: Dict[str, Tuple[int, List[int]]] = {}  # sweep dir -> (the lock's fd, the slot's cards), for this process


def slots(cards: List[int], per_job: int) -> List[List[int]]:
    """The machine's cards cut into disjoint slots of per_job cards (a remainder too small for a job is left out)."""
    per_job = max(1, per_job)
    return [cards[k * per_job : (k + 1) * per_job] for k in range(len(cards) // per_job)]


def parallel_gpu_jobs(n_jobs: int, device: str, n_gpus: int, cards: Optional[List[int]] = None) -> int:
    """n_jobs, capped at the slots the machine's cards make for a CUDA profile (at least 1)."""
    if not str(device).startswith("cuda"):
        return int(n_jobs)
    if cards is None:
        from runner.system.gpu import machine_gpus

        cards = [g.index for g in machine_gpus()]
    return max(1, min(int(n_jobs), len(slots(cards, int(n_gpus)))))


def claim(sweep_dir: Path, cards: List[int], per_job: int, poll_s: float = 1.0) -> List[int]:
    """This process's slot for the sweep: the one it already holds, else the first free one (waits while all are
    taken). Sets CUDA_VISIBLE_DEVICES to its cards and returns them."""
    key = str(Path(sweep_dir).resolve())
    if key not in _HELD:
        choices = slots(cards, per_job)
        if not choices:
            raise RuntimeError(f"{len(cards)} visible GPU(s) cannot hold a job of {per_job}")
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        _HELD[key] = _lock_one(Path(sweep_dir), choices, poll_s)
    visible = _HELD[key][1]
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's indices as NVML's (its default puts the fastest first)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(c) for c in visible)
    return visible


def _lock_one(folder: Path, choices: List[List[int]], poll_s: float) -> Tuple[int, List[int]]:
    while True:
        for k, cards in enumerate(choices):
            fd = os.open(folder / f"gpu_slot_{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {','.join(map(str, cards))}\n".encode())  # who holds it, for a person
            return fd, cards
        time.sleep(poll_s)


def release_all() -> None:
    """Drop every slot this process holds (tests; a worker's exit does it otherwise)."""
    for fd, _ in _HELD.values():
        os.close(fd)
    _HELD.clear()
