"""User-facing errors: one line naming the config key and the fix."""

import dataclasses
import difflib
import sys
from contextlib import contextmanager
from typing import Optional


class UserError(Exception):
    """Bad input. Printed as a single line; the process exits non-zero."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        self.key, self.problem, self.fix = key, problem, fix
        text = f"{key}: {problem}"
        if fix:
            text += f" -- fix: {fix}"
        super().__init__(text)


@contextmanager
def exit_on_user_error():
    """Bad input met outside a job's MLflow run (e.g. the store itself): one line on stderr, exit 2.

    SystemExit passes through Hydra, which would print a traceback for any Exception.
    """
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def config_error(ex: BaseException) -> Optional[UserError]:
    """Hydra's composition errors (an unknown key, a wrong type, an unknown option, an unparsable override) as the
    project's one line; None for any other exception."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(ex, MissingConfigException) and ex.options is not None:
        group, _, name = str(ex.missing_cfg_file).rpartition("/")
        return UserError(
            group or "config",
            f"no option '{name}'",
            _did_you_mean(name, ex.options, group + "=") + f"pick one of: {', '.join(ex.options)}",
        )
    if isinstance(ex, OverrideParseException):
        return UserError("override", " ".join(str(ex).split()), "write each override as key=value (a sweep: key=a,b)")
    cause, fields = ex.__cause__, {}
    key = getattr(cause, "full_key", None)
    if not key:
        return None
    if dataclasses.is_dataclass(getattr(cause, "object_type", None)):
        fields = {f.name: f.type for f in dataclasses.fields(cause.object_type)}
    parent, _, leaf = str(key).rpartition(".")
    if "not in" in str(cause):  # omegaconf's ConfigKeyError / ConfigAttributeError on a structured node
        names = sorted(fields)
        return UserError(
            key,
            f"no such key in {parent or 'the config'}",
            _did_you_mean(leaf, names, f"{parent}." if parent else "")
            + (f"the keys there are: {', '.join(names)}" if names else "check the spelling"),
        )
    problem = str(cause).splitlines()[0]
    wanted = fields.get(leaf)
    return UserError(key, problem, f"give {key} {_type_name(wanted)}" if wanted else f"check the value of {key}")


def _did_you_mean(word: str, options, prefix: str) -> str:
    near = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean {prefix}{near[0]}? " if near else ""


def _type_name(annotation) -> str:
    name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(name, f"a {name}")
