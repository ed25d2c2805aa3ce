"""quantize(model, format, calibration, hardware) -> Artifact: a folder plus manifest.json, cached.

The quantize stage (runner/stages/quantize.py) makes the job's artifact with it; the eval baseline's
reference and the tasks stage make the baseline's the same way.
"""

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import OmegaConf

from runner.cache import Cache
from runner.data.calibration import calibration_identity
from runner.formats import get_format
from runner.system.hashing import sha256_file

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


@dataclass
class Artifact:
    """Facts about the files only: which engine runs them is each job's own format.engine."""

    path: Path
    manifest: Dict[str, Any]
    cache_hit: bool = False
    downloaded_from: Optional[str] = None  # the MLflow run that uploaded it (cache.remote=mlflow), when fetched
    # settings the preset left to the model or the machine, as decided for this job, with their reasons (Format.resolve)
    resolved: Dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.manifest["weight_bytes"]

    @property
    def bits_per_weight(self) -> float:
        return self.manifest["bits_per_weight"]


def artifact_key(model, format_cfg, calibration_cfg, cache: Cache, resolved: Optional[Dict[str, Any]] = None) -> str:
    """The artifact's identity: the model's, the (resolved) format settings, the calibration, the libraries, and
    what Format.resolve decided besides the settings (the dtype a backend runs in); never its reasons' wording."""
    fmt = get_format(format_cfg.family)
    settings = OmegaConf.to_container(format_cfg, resolve=True)
    settings.pop("name", None)  # neither a preset's name nor the engine that will run it changes the file
    settings.pop("engine", None)
    calib = calibration_identity(calibration_cfg, cache) if fmt.uses_calibration(format_cfg) else None
    decided = {k: v for k, v in (resolved or {}).items() if not k.endswith("_why") and k not in settings}
    return Cache.key(
        "artifact", model.identity, settings, calib, fmt.library_versions(), *([decided] if decided else [])
    )


def quantize(model, format_cfg, calibration_cfg, hardware_cfg, cache: Cache) -> Artifact:
    fmt = get_format(format_cfg.family)
    # settings left to the model (a group size of null) are decided first: the key holds what the files are made of
    format_cfg, resolved = fmt.resolve(format_cfg, model, hardware_cfg)
    fmt.validate(format_cfg, model)
    key = artifact_key(model, format_cfg, calibration_cfg, cache, resolved)
    built: list = []
    fetched: list = []

    def build(folder):
        run_id = _fetch(cache, key, folder)
        if run_id:
            fetched.append(run_id)
            return
        log.info("quantizing %s to %s", model.name, format_cfg.name)
        start = time.perf_counter()
        extras = fmt.quantize(model, format_cfg, calibration_cfg, hardware_cfg, folder, cache=cache)
        wall = time.perf_counter() - start
        manifest = _manifest(folder, model, format_cfg, fmt, {**extras, "resolved": resolved}, wall, key)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
        built.append(folder)

    # a hit is verified against its .entry.json; a corrupt one is rebuilt
    path = cache.get_or_build("artifacts", key, build, label=f"{model.name} {format_cfg.name}")
    manifest = json.loads((path / MANIFEST).read_text())
    return Artifact(
        path,
        manifest,
        cache_hit=not (built or fetched),
        downloaded_from=fetched[0] if fetched else None,
        resolved=resolved,
    )


def _fetch(cache: Cache, key: str, folder: Path) -> Optional[str]:
    """The artifact downloaded from the remote store into `folder` and verified against its manifest: the
    uploading run's id; None (and `folder` left empty) when there is none, or it does not match."""
    if cache.remote_artifacts is None:
        return None
    run_id = cache.remote_artifacts(key, folder)
    if not run_id:
        return None
    problem = _unverified(folder, key)
    if problem is None:
        return run_id
    log.warning("the artifact uploaded by MLflow run %s %s: quantizing it here", run_id, problem)
    for p in folder.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return None


def _unverified(folder: Path, key: str) -> Optional[str]:
    """What is wrong with a downloaded artifact, judged by its manifest (every file's size and sha256), or None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"has no readable {MANIFEST}"
    if manifest.get("key") != key:
        return f"is artifact {manifest.get('key')}, not {key}"
    for name, facts in manifest.get("files", {}).items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != facts["bytes"] or sha256_file(f) != facts["sha256"]:
            return f"has {name} unlike its manifest (missing, another size or another sha256)"
    return None


def _manifest(folder: Path, model, format_cfg, fmt, extras: Dict[str, Any], wall: float, key: str) -> Dict[str, Any]:
    weight_files = extras.pop("weight_files")
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}  # a temp folder: memoized in-process only
        for p in sorted(folder.iterdir())
        if p.is_file()
    }
    weight_bytes = sum(files[n]["bytes"] for n in weight_files)
    tensor_bytes = extras.pop("tensor_bytes", None) or sum(_tensor_data_bytes(folder / n) for n in weight_files)
    return {
        "key": key,
        "format": format_cfg.name,
        "family": format_cfg.family,
        "model": {"name": model.name, "identity": model.identity, "n_params": model.n_params, "origin": model.origin},
        "files": files,
        "weight_files": weight_files,
        "weight_bytes": weight_bytes,
        # bits per weight over the base model's parameter count, from the tensor data actually stored
        "bits_per_weight": 8.0 * tensor_bytes / model.n_params if model.n_params else None,
        "library_versions": fmt.library_versions(),
        "quantize_s": wall,
        **extras,
    }


def _tensor_data_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file (file size minus its JSON header)."""
    if path.suffix != ".safetensors":
        return path.stat().st_size
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
    return path.stat().st_size - 8 - header_len
