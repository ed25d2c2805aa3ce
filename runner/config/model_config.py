"""What a model's config.json says that the runner decides from: its dtype and its text model's part.

Read from the dict (json.loads of the file), so the rules built on it (runner/config/baseline.py,
runner/formats/group_size.py) are pure functions, testable with a config.json written by hand.
"""

import json
from pathlib import Path
from typing import Optional

BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def read(folder: Path) -> dict:
    """config.json of a HF model folder (runner/data/models.py has checked that it parses)."""
    return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))


def text_config(config: dict) -> dict:
    """The language model's part of config.json (multimodal checkpoints nest it under text_config)."""
    return config.get("text_config") or config


def model_dtype(config: dict) -> Optional[str]:
    """The dtype config.json declares (transformers 5 `dtype`, 4 `torch_dtype`; a multimodal's text_config), as a
    torch dtype name; None where it declares none of float32, bfloat16, float16."""
    for c in (config, config.get("text_config") or {}):
        for key in ("dtype", "torch_dtype"):
            value = str(c.get(key) or "").removeprefix("torch.")
            value = _ALIASES.get(value, value)
            if value in BYTES_PER_PARAM:
                return value
    return None
