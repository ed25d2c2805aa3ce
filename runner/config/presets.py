"""One option of a config group (conf/<group>/<name>.yaml), composed by Hydra and validated by its schema.

For presets a job needs besides its own (the eval baseline's format) and for tools outside a job
(the report's hardware profile). Hydra composes the whole config with `<group>=<name>`, so the
option gets exactly the schema, defaults and checks it would get in `qrun <group>=<name>`.
"""

from omegaconf import DictConfig

from runner.errors import UserError
from runner.paths import CONF_DIR, options

NOUNS = {"format": "format preset", "hardware": "hardware profile"}  # as the error messages name them


def load_preset(group: str, name: str, key: str) -> DictConfig:
    """The validated `group` node of the config composed with `group=name`; UserError naming `key` if it is unknown."""
    choices = options(group)
    if name not in choices:
        raise UserError(key, f"no {NOUNS.get(group, group + ' preset')} '{name}'", f"use one of {choices}")
    return _compose([f"{group}={name}"])[group]


def _compose(overrides) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.config.schema import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():  # inside the qrun app (or a caller's own Hydra): its search path
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)
