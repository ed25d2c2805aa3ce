"""AWQ's scale search (llm-compressor's grid) is a format setting: it reaches AWQModifier, names a different
artifact in the cache, and a grid too small to search is refused before any work."""

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir

from runner.cache import Cache
from runner.config.schema import register_configs
from runner.errors import UserError
from runner.formats import get_format
from runner.paths import CONF_DIR

register_configs()


def _awq(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["format=awq_int4", *overrides])


def test_grid_settings_reach_the_awq_modifier():
    from llmcompressor.modifiers.transform.awq import AWQModifier

    from runner.formats.backends.llmcompressor_backend import recipe

    awq = recipe("awq", bits=4, sym=False, group_size=32, n_grid=7, duo_scaling=False)[0]
    assert isinstance(awq, AWQModifier) and awq.n_grid == 7 and awq.duo_scaling is False


def test_the_grid_is_part_of_the_artifact_key(cache_dir, shakespeare_dir):
    from runner.formats.artifacts import artifact_key

    model, cache = SimpleNamespace(identity="m"), Cache(cache_dir)
    keys = {
        artifact_key(model, cfg.format, cfg.calibration, cache)
        for cfg in (
            _awq("format.n_grid=10"),
            _awq("format.n_grid=20"),
            _awq("format.n_grid=10", "format.duo_scaling=false"),
        )
    }
    assert len(keys) == 3


@pytest.mark.parametrize("n_grid, duo", [(2, "true"), (1, "false")])
def test_a_grid_too_small_to_search_is_refused(n_grid, duo):
    cfg = _awq(f"format.n_grid={n_grid}", f"format.duo_scaling={duo}").format
    with pytest.raises(UserError) as e:
        get_format("awq").validate(cfg, None)
    assert e.value.key == "format.n_grid"


def test_the_quick_preset_only_narrows_the_search_and_says_so():
    """make run's AWQ: awq_int4 with a 5-point search, under its own name so its row never passes for the full one."""
    import yaml

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        quick = compose(config_name="config", overrides=["format=awq_int4_quick"]).format
        full = compose(config_name="config", overrides=["format=awq_int4"]).format
    assert quick.name == "awq_int4_quick" and quick.n_grid == 5 and full.n_grid == 10
    differ = {k for k in full if full[k] != quick[k]}
    assert differ == {"name", "n_grid"}
    sweep = yaml.safe_load((CONF_DIR / "experiment" / "cpu_default.yaml").read_text())["hydra"]["sweeper"]["params"]
    assert "awq_int4_quick" in sweep["format"].split(",")
