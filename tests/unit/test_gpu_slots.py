"""joblib on a GPU machine: each worker its own cards, never two jobs on one card (runner/system/gpu_slots.py)."""

import subprocess
import sys

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from helpers import ROOT
from runner.config.schema import register_configs
from runner.system import gpu_slots

register_configs()

CLAIM = (
    "import os, sys, time; from runner.system.gpu_slots import claim; "
    "claim(sys.argv[1], [0, 1, 2, 3], 2, poll_s=0.05); print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); "
    "time.sleep(float(sys.argv[2]))"
)


def _worker(sweep_dir, hold_s):
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(sweep_dir), str(hold_s)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def test_slots_cut_the_cards_by_the_profiles_gpus():
    assert gpu_slots.slots([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert gpu_slots.slots([0, 1, 2], 2) == [[0, 1]]  # the third card alone cannot hold a 2-GPU job
    assert gpu_slots.slots([0], 2) == []


def test_n_jobs_is_capped_by_cards_over_gpus_per_job():
    assert gpu_slots.parallel_gpu_jobs(4, "cuda", 2, cards=[0, 1, 2, 3]) == 2
    assert gpu_slots.parallel_gpu_jobs(2, "cuda", 2, cards=[0, 1, 2, 3, 4, 5, 6, 7]) == 2
    assert gpu_slots.parallel_gpu_jobs(3, "cuda", 1, cards=[0]) == 1
    assert gpu_slots.parallel_gpu_jobs(4, "cpu", 0, cards=[]) == 4  # a CPU profile: cores, not cards, bound it


def test_the_launcher_config_resolves_n_jobs_through_the_cap():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=local_parallel"], return_hydra_config=True)
    assert instantiate(cfg.hydra.launcher).joblib["n_jobs"] == 2  # hardware=cpu: the preset's 2


def test_two_workers_get_disjoint_cards_and_a_third_waits_for_a_free_slot(tmp_path):
    first, second = _worker(tmp_path, 20), _worker(tmp_path, 1.5)
    first_cards, second_cards = first.stdout.readline().strip(), second.stdout.readline().strip()
    assert {first_cards, second_cards} == {"0,1", "2,3"}
    third = _worker(tmp_path, 0)  # every slot taken: it waits until the second worker exits
    assert third.stdout.readline().strip() == second_cards
    assert second.poll() is not None  # it got the cards only once their holder was gone
    third.wait(timeout=30)
    first.kill()
    first.wait()


def test_a_worker_keeps_its_slot_for_every_later_job(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded, so the value claim() sets is undone after the test
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    try:
        assert gpu_slots.claim(tmp_path, [0, 1], 1) == [0]
        assert gpu_slots.claim(tmp_path, [0, 1], 1) == [0]  # not a second slot: CUDA may be initialized already
    finally:
        gpu_slots.release_all()
