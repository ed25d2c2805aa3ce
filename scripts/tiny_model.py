"""Build the tiny test model (2-layer random Llama, hidden 256, SentencePiece BPE tokenizer) into a folder.

The same model as tests/conftest.py's tiny_model_dir, for scripts (scripts/gpu_check.sh):
    python scripts/tiny_model.py OUT_DIR TEXT_FILE
"""

import sys
from pathlib import Path


def train_tokenizer(out: Path, text_file: Path, vocab_size: int = 512):
    """A SentencePiece BPE (byte fallback, BOS 1, EOS 2) trained on text_file, saved in out as a LlamaTokenizer."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text_file.read_text().splitlines()),
        model_prefix=str(out / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    tok = LlamaTokenizer.from_pretrained(out)
    tok.save_pretrained(out)
    return tok


def build(out: Path, text_file: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(out, text_file)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), Path(sys.argv[2])))
