"""A character-level tokenizer for exact label tests: one token per character, unk/pad/bos/eos = 0/1/2/3."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def char_tokenizer(chars: str, pad_is_eos: bool = False) -> PreTrainedTokenizerFast:
    """One token per character of `chars` (ids from 4 in order), special ids like the project's tokenizer."""
    vocab = {"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>" if pad_is_eos else "<pad>")
