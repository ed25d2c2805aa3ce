"""Hydra's composition errors become the project's one line `<key>: <problem> -- fix: <what to do>` (runner/errors.py).

tests/integration/test_cli_errors.py checks the real `qrun` prints it with exit 2.
"""

import pytest

from helpers import compose
from runner.errors import config_error


def _line(overrides):
    with pytest.raises(Exception) as e:
        compose(overrides)
    error = config_error(e.value)
    assert error is not None, f"{type(e.value).__name__}: {e.value}"
    assert "\n" not in str(error) and error.fix, str(error)
    return error


def test_a_typo_names_the_full_key_and_the_near_one():
    error = _line(["benchmark.repeat=3"])
    assert error.key == "benchmark.repeat" and error.problem == "no such key in benchmark"
    assert error.fix.startswith("did you mean benchmark.repeats? the keys there are: ") and "warmup" in error.fix


def test_a_key_of_another_format_names_what_this_one_has():
    error = _line(["format=fp16", "format.bits=4"])
    assert error.key == "format.bits" and error.fix == "the keys there are: dtype, engine, family, name, server"


def test_a_wrong_type_names_the_key_and_the_type_wanted():
    error = _line(["eval.n_tokens=lots"])
    assert error.key == "eval.n_tokens" and "'lots'" in error.problem and error.fix == "give eval.n_tokens an integer"


@pytest.mark.parametrize("group,option,near", [("format", "gguf_q4km", "gguf_q4_k_m"), ("experiment", "nope", None)])
def test_an_unknown_option_lists_the_presets(group, option, near):
    error = _line([f"{group}={option}"])
    assert error.key == group and error.problem == f"no option '{option}'"
    assert ("did you mean " + f"{group}={near}?" in error.fix) if near else not error.fix.startswith("did you mean")
    assert "schema" not in error.fix and ("cpu_quick" in error.fix if group == "experiment" else "fp16" in error.fix)


def test_an_override_without_a_value_says_how_to_write_one():
    error = _line(["eval.n_tokens"])
    assert error.key == "override" and "eval.n_tokens" in error.problem and "key=value" in error.fix


def test_other_exceptions_are_left_to_their_own_report():
    assert config_error(ValueError("boom")) is None and config_error(RuntimeError()) is None
