"""hydra/launcher=slurm takes its resource request from the hardware profile (no cluster needed).

The real submission on a one-node cluster is tests/e2e/test_slurm.py.
"""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from helpers import ROOT
from runner.config.schema import register_configs

register_configs()


def _launcher_params(overrides):
    """The parameters the submitit launcher is built with, as Hydra builds it for a multirun: its config node
    instantiated with the rest of the composed config as the root its interpolations resolve against."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    return instantiate(cfg.hydra.launcher).params


@pytest.mark.parametrize(
    "hardware,cpus,gpus,constraint",
    [("rtx3090x2", 8, 2, "rtx3090"), ("h100", 16, 1, "h100"), ("cuda", 8, 1, None)],
)
def test_gpu_profiles_set_cpus_gpus_and_constraint(hardware, cpus, gpus, constraint):
    params = _launcher_params([f"hardware={hardware}"])
    assert (params["cpus_per_task"], params["gpus_per_node"], params["constraint"]) == (cpus, gpus, constraint)


def test_cpu_profile_requests_no_gpu_and_no_feature():
    params = _launcher_params(["hardware=cpu", "hardware.threads=3"])
    assert (params["cpus_per_task"], params["gpus_per_node"], params["constraint"]) == (3, 0, None)


def test_command_line_overrides_reach_the_request():
    params = _launcher_params(["hardware=rtx3090x2", "hardware.slurm_constraint=a100", "hardware.n_gpus=1"])
    assert (params["gpus_per_node"], params["constraint"]) == (1, "a100")
    assert _launcher_params(["hardware=h100", "hydra.launcher.gpus_per_node=4"])["gpus_per_node"] == 4
