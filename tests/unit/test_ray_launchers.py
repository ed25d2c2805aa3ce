"""The Ray launcher configs ask Ray for the hardware profile's cores and GPUs (no Ray started here).

What reaches Ray is what the plugin passes it: the launcher Hydra instantiates from hydra.launcher (which resolves
it, so a missing address fails there), its `ray.init` and `ray.remote` as OmegaConf.to_container(resolve=True)
gives them to ray.init and ray.remote (hydra_ray_launcher/_launcher_util.py).
"""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from helpers import ROOT
from runner.config.schema import register_configs
from runner.system.environment import usable_cores

register_configs()


def _launcher(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)  # as Hydra's Plugins.instantiate_launcher does
    return launcher.ray_cfg


def test_ray_cluster_asks_for_the_profiles_gpus_and_threads(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = _launcher(
        ["hardware=rtx3090x2", "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=10.0.0.1:6379"]
    )
    assert OmegaConf.to_container(ray.remote, resolve=True) == {"num_cpus": 8, "num_gpus": 2}
    init = OmegaConf.to_container(ray.init, resolve=True)
    # object_store_memory present (None): the plugin's setdefault leaves it, and Ray accepts None for a running cluster
    assert init == {"address": "10.0.0.1:6379", "object_store_memory": None}


def test_ray_cluster_reads_the_address_from_RAY_ADDRESS_and_refuses_none(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    ray = _launcher(["hydra/launcher=ray_cluster", "hardware.threads=1"])
    assert OmegaConf.to_container(ray.init, resolve=True)["address"] == "10.0.0.2:6379"
    assert OmegaConf.to_container(ray.remote, resolve=True) == {"num_cpus": 1, "num_gpus": 0}
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(InterpolationResolutionError, match="RAY_ADDRESS"):  # not a new local instance
        _launcher(["hydra/launcher=ray_cluster"])


def test_ray_local_asks_for_the_profiles_gpus_and_threads():
    ray = _launcher(["hardware=cuda", "hydra/launcher=ray_local"])
    assert OmegaConf.to_container(ray.remote, resolve=True) == {"num_cpus": 8, "num_gpus": 1}
    init = OmegaConf.to_container(ray.init, resolve=True)
    # the instance it starts offers every usable core: a job of 8 threads fits where the machine has 8
    assert init["address"] is None and init["num_cpus"] == usable_cores()
