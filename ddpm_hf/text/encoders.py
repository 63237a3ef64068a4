# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""CLIP text components built offline: the real 49,408-token CLIP tokenizer and small random CLIPTextModels.

No CLIP weights can be had without the Hub, but the vocabulary ships with this package (assets/), so tests and the
embedded captioned digits use a real tokenizer with a small text encoder trained from scratch. Users online pass a
Hub id such as `openai/clip-vit-base-patch32` to the trainer instead.
"""

import gzip
import json
import os
import tempfile

from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

VOCAB_ASSET = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "clip_bpe_simple_vocab_16e6.txt.gz")
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Small encoders for the embedded digits and for tests.
TEXT_ENCODER_PRESETS = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
    "small": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
}
# The builtin encoders are drawn at 10x CLIP's initialisation scale. At CLIP's own scale (embeddings of std 0.02 under
# layers whose outputs are O(1)) a random encoder's attention averages over the caption, so captions that differ in one
# word get nearly the same states, and a UNet takes thousands of steps to learn to read them. Drawn 10x larger,
# attention is sharp and each word survives the layers: the ten digit captions lie about five times further apart, and
# the small-budget steering test (tests/test_train_text_to_image.py) scores 0.53 where CLIP's scale scores chance.
BUILTIN_INITIALIZER_FACTOR = 10.0


def bytes_to_unicode() -> dict:
    """CLIP's (and GPT-2's) reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def clip_vocabulary():
    """(vocab: token -> id, merges: list of pairs), built exactly as CLIP's SimpleTokenizer builds them."""
    with gzip.open(VOCAB_ASSET) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [token + "</w>" for token in tokens] + ["".join(pair) for pair in merges] + [BOS, EOS]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    return {token: i for i, token in enumerate(tokens)}, merges


def write_clip_tokenizer_files(folder: str) -> str:
    """Write vocab.json, merges.txt and the special-token settings CLIPTokenizer.from_pretrained(folder) reads."""
    vocab, merges = clip_vocabulary()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    settings = {
        "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS, "model_max_length": CLIP_MAX_LENGTH,
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f)
    return folder


def build_clip_tokenizer(folder: str | None = None) -> CLIPTokenizer:
    """The real CLIP tokenizer (49,408 tokens, bos 49406, eos 49407), with no network; its files are written to
    `folder` (kept), or with none to a temporary folder removed once the tokenizer has read them into memory."""
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="ddpm-hf-clip-tokenizer-") as temporary:
            return build_clip_tokenizer(temporary)
    if not os.path.isfile(os.path.join(folder, "vocab.json")):
        write_clip_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(folder)


def build_clip_text_encoder(preset: str = "tiny", seed: int = 0, **overrides) -> CLIPTextModel:
    """A randomly initialised CLIPTextModel over the CLIP vocabulary; `preset` in TEXT_ENCODER_PRESETS, drawn at
    BUILTIN_INITIALIZER_FACTOR times CLIP's initialisation scale unless `initializer_factor` is given."""
    import torch

    if preset not in TEXT_ENCODER_PRESETS:
        raise ValueError(f"Unknown text encoder preset {preset!r}: choose one of {sorted(TEXT_ENCODER_PRESETS)}.")
    settings = dict(vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=49406,
                    eos_token_id=49407, pad_token_id=49407, initializer_factor=BUILTIN_INITIALIZER_FACTOR,
                    **TEXT_ENCODER_PRESETS[preset])
    config = CLIPTextConfig(**{**settings, **overrides})
    torch.manual_seed(seed)
    return CLIPTextModel(config)
