"""generate(): only the response comes back, it stops at EOS, batches equal single prompts, sampling is seeded."""

from __future__ import annotations

import pytest
import torch
from char_tokenizer import char_tokenizer as make_char_tokenizer
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from nbhelpers import generate as gen

CHARS = "QAab12xyz"
T = "Q{prompt}A"


def char_tokenizer(pad_is_eos: bool = False) -> PreTrainedTokenizerFast:
    """One token per character of CHARS."""
    return make_char_tokenizer(CHARS, pad_is_eos)


def bigram_model(tok: PreTrainedTokenizerFast, chain: dict[str, str]) -> GPTNeoXForCausalLM:
    """A GPT-NeoX whose next token depends only on the current one, as `chain` says (others -> EOS).

    Attention and MLP outputs are zeroed, so the residual stream is the token's embedding, a one-hot vector;
    the output matrix then maps each token to its successor with a large margin.
    """
    vocab = len(tok.get_vocab())
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, eos_token_id=3, pad_token_id=1,
                        bos_token_id=2, tie_word_embeddings=False)
    model = GPTNeoXForCausalLM(cfg)
    ids = tok.get_vocab()
    eos = tok.eos_token_id
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            layer.attention.dense.weight.zero_()
            layer.attention.dense.bias.zero_()
            layer.mlp.dense_4h_to_h.weight.zero_()
            layer.mlp.dense_4h_to_h.bias.zero_()
        model.get_input_embeddings().weight.copy_(torch.eye(vocab, 32))
        w = torch.zeros(vocab, 32)
        for t in range(vocab):
            nxt = ids[chain[tok.convert_ids_to_tokens(t)]] if tok.convert_ids_to_tokens(t) in chain else eos
            w[nxt, t] = 20.0
        model.get_output_embeddings().weight.copy_(w)
    return model.eval()


CHAIN = {"A": "1", "1": "2", "2": "</s>", "b": "x"}  # after the template's "A": "1", "2", then EOS


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_returns_only_the_response_and_stops_at_eos(pad_is_eos):
    tok = char_tokenizer(pad_is_eos)
    model = bigram_model(tok, CHAIN)
    assert gen.generate(model, tok, "ab", template=T, max_new_tokens=10) == "12"
    [r] = gen.generate_batch(model, tok, ["ab"], template=T, max_new_tokens=10)
    assert (r.text, r.ended, r.new_tokens) == ("12", True, 3)


def test_token_budget_reached_is_not_an_eos_ending():
    tok = char_tokenizer()
    model = bigram_model(tok, {"A": "1", "1": "1"})  # never ends
    [r] = gen.generate_batch(model, tok, ["ab"], template=T, max_new_tokens=5)
    assert (r.text, r.ended, r.new_tokens) == ("11111", False, 5)


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_left_padded_batch_equals_one_by_one(pad_is_eos):
    tok = char_tokenizer(pad_is_eos)
    model = bigram_model(tok, {"A": "1", "1": "2", "2": "x", "x": "</s>"})
    prompts = ["a", "abababab", "xyz"]
    singles = [gen.generate(model, tok, p, template=T, max_new_tokens=8) for p in prompts]
    assert singles == ["12x", "12x", "12x"]
    assert gen.generate(model, tok, prompts, template=T, max_new_tokens=8, batch_size=3) == singles


def test_batched_random_model_matches_unbatched_greedy():
    """Left padding with the attention mask gives the same greedy tokens as one prompt at a time."""
    tok = char_tokenizer()
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = GPTNeoXForCausalLM(cfg).eval()
    prompts = ["a", "ab12xyzab", "xy"]
    kw = {"template": T, "max_new_tokens": 6}
    singles = [gen.generate_batch(model, tok, [p], **kw)[0] for p in prompts]
    assert gen.generate_batch(model, tok, prompts, batch_size=3, **kw) == singles


def test_prompt_tokens_are_the_training_context():
    from nbhelpers.collator import IGNORE, build_example

    tok = char_tokenizer()
    ex = build_example(tok, "ab", "12", 32, template=T)
    context = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == IGNORE]
    assert gen.prompt_tokens(tok, "ab", T) == context
    # an over-long prompt loses its start, the template stays
    assert gen.prompt_tokens(tok, "xyzab", T, max_tokens=5) == tok.convert_tokens_to_ids(["</s>", "Q", "a", "b", "A"])


def test_sampling_is_seeded_and_respects_strong_logits():
    tok = char_tokenizer()
    model = bigram_model(tok, CHAIN)
    kw = {"template": T, "max_new_tokens": 6, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 3}
    assert gen.generate(model, tok, ["ab", "a"], **kw) == ["12", "12"]
    torch.manual_seed(0)
    weak = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=13, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=16, max_position_embeddings=64)).eval()
    hot = {**kw, "temperature": 5.0, "top_p": 1.0}
    first = gen.generate(weak, tok, ["ab"] * 4, **hot)
    assert gen.generate(weak, tok, ["ab"] * 4, **hot) == first  # same seed, same text
    assert len(set(gen.generate(weak, tok, ["ab"] * 8, **{**hot, "seed": 11}))) > 1  # sampling does vary


def test_compare_puts_models_side_by_side():
    tok = char_tokenizer()
    rows = gen.compare({"one": bigram_model(tok, CHAIN), "two": bigram_model(tok, {"A": "x"})}, tok, ["a"],
                       template=T, max_new_tokens=4)
    assert rows == [{"prompt": "a", "one": "12", "two": "x"}]


def test_model_is_left_in_its_mode():
    tok = char_tokenizer()
    model = bigram_model(tok, CHAIN).train()
    gen.generate(model, tok, "a", template=T, max_new_tokens=2)
    assert model.training


def _random_model(tok, context: int = 64, seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=context)
    return GPTNeoXForCausalLM(cfg).eval()


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_fixed_shapes_give_generates_answers(pad_is_eos):
    """The fixed-buffer decoder (XLA's default) answers as transformers' generate does, on the CPU."""
    tok = char_tokenizer(pad_is_eos)
    prompts = ["a", "ab12xyzab", "xy", "b"]
    for model in (_random_model(tok), bigram_model(tok, {"A": "1", "1": "2", "2": "x", "x": "</s>"})):
        kw = {"template": T, "max_new_tokens": 20, "batch_size": 3}
        assert gen.generate_batch(model, tok, prompts, fixed_shapes=True, **kw) == \
            gen.generate_batch(model, tok, prompts, fixed_shapes=False, **kw)


def test_fixed_shapes_stop_early_once_every_row_has_ended():
    from nbhelpers import fixed_shapes

    tok = char_tokenizer()
    model = bigram_model(tok, CHAIN)
    calls = []
    prompts = [tok(T.format(prompt=p), add_special_tokens=False)["input_ids"] for p in ("ab", "a")]
    new = fixed_shapes.decode(model, prompts, 40, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, check_every=4,
                              after_step=lambda: calls.append(1))
    assert len(calls) == 4  # EOS after 3 tokens: seen at the first check, not 40 steps
    assert [row[:3] for row in new] == [tok.convert_tokens_to_ids(["1", "2", "</s>"])] * 2
    with pytest.raises(ValueError, match="repetition_penalty is not available with fixed shapes"):
        gen.generate_batch(model, tok, ["a"], template=T, max_new_tokens=8, repetition_penalty=1.2, fixed_shapes=True)


def test_fixed_shape_sampling_is_seeded_and_follows_strong_logits():
    tok = char_tokenizer()
    kw = {"template": T, "max_new_tokens": 6, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "seed": 3,
          "fixed_shapes": True}
    assert gen.generate(bigram_model(tok, CHAIN), tok, ["ab", "a"], **kw) == ["12", "12"]
    weak = _random_model(tok)
    hot = {**kw, "temperature": 5.0, "top_p": 1.0}
    first = gen.generate(weak, tok, ["ab"] * 4, **hot)
    assert gen.generate(weak, tok, ["ab"] * 4, **hot) == first  # same seed, same text
    assert len(set(gen.generate(weak, tok, ["ab"] * 8, **{**hot, "seed": 11}))) > 1  # sampling does vary
    assert len(set(gen.generate(weak, tok, ["ab"] * 8, **{**hot, "seed": 11, "top_k": 1}))) == 1  # top-1 is greedy


@pytest.mark.xla
def test_chat_generation_on_xla_compiles_once_per_width_bucket():
    """05's calls on the CPU PJRT device: after the first batch, more prompts compile nothing new, and the host
    reads the buffer once per 16 tokens, not once per token."""
    pytest.importorskip("torch_xla")
    from nbhelpers import config, sft, xla
    from nbhelpers import device as devices

    tok = char_tokenizer()
    device = sft.inference_device(devices.select(config.load("smoke", ["train.backend=xla"]).train))
    model = _random_model(tok).to(device)  # a 64-token context: every prompt falls in the one 64-wide bucket
    kw = {"template": T, "max_new_tokens": 32, "batch_size": 4}
    gen.generate_batch(model, tok, ["a", "ab"], **kw)  # compiles the decoding step once
    before = xla.counters()
    prompts = ["a", "ab12xyzab", "xy", "b", "12", "yz", "aa", "x1", "b2"]  # 3 batches
    answers = gen.generate_batch(model, tok, prompts, **kw)
    used = xla.counters() - before
    assert used.compiles == 0
    assert used.transfers_from_device <= 3 * (32 // 16 + 1)  # per batch: a check per 16 steps and the result
    assert used.scalar_reads == 0
    assert answers == gen.generate_batch(model.cpu(), tok, prompts, fixed_shapes=False, **kw)


@pytest.mark.xla
def test_xla_device_gives_the_cpu_answers():
    """On torch_xla's CPU PJRT device (the TPU code path): same greedy answers as on the CPU."""
    pytest.importorskip("torch_xla")
    import torch_xla

    tok = char_tokenizer()
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    model = GPTNeoXForCausalLM(cfg).eval()
    prompts = ["a", "ab12xyzab", "xy"]
    kw = {"template": T, "max_new_tokens": 6}
    on_cpu = gen.generate_batch(model, tok, prompts, **kw)
    on_xla = gen.generate_batch(model.to(torch_xla.device()), tok, prompts, **kw)
    assert on_xla == on_cpu
    assert gen.generate(bigram_model(tok, CHAIN).to(torch_xla.device()), tok, "ab", template=T,
                        max_new_tokens=10) == "12"
