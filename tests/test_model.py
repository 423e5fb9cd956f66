"""Model presets, parameter counts and the errors build_model and check_compatible give."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXForCausalLM

from nbhelpers.config import ModelConfig
from nbhelpers.model import (
    PRESETS,
    ModelError,
    build_model,
    check_compatible,
    count_parameters,
    hf_config,
    parameter_breakdown,
    resolve,
)


def test_seed_1b_is_the_reports_776m_model():
    cfg = resolve(ModelConfig(preset="seed_1b"))
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (1536, 24, 16)
    assert (cfg.intermediate_size, cfg.max_position_embeddings) == (6114, 1024)
    # hand count: embeddings 2 * 32000 * 1536; per layer QKV 3*1536^2+3*1536, dense 1536^2+1536,
    # MLP 2*1536*6114+6114+1536, two LayerNorms 4*1536; final LayerNorm 2*1536
    per_layer = (3 * 1536**2 + 3 * 1536) + (1536**2 + 1536) + (2 * 1536 * 6114 + 6114 + 1536) + 4 * 1536
    assert per_layer == 28_239_330
    assert count_parameters(ModelConfig(preset="seed_1b"), 32000) == 2 * 32000 * 1536 + 24 * per_layer + 2 * 1536
    assert count_parameters(ModelConfig(preset="seed_1b"), 32000) == 776_050_992


def test_seed_1b_built_by_transformers_has_the_same_count():
    # the meta device builds the real module tree without allocating 3 GB of weights
    hf = hf_config(ModelConfig(preset="seed_1b"), 32000)
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(hf)
    assert count_parameters(model) == 776_050_992
    assert hf.hidden_act == "gelu" and hf.tie_word_embeddings is False
    assert model.get_input_embeddings().weight is not model.get_output_embeddings().weight  # untied


def test_neox_1b_differs_only_in_intermediate_size():
    a, b = resolve(ModelConfig(preset="seed_1b")), resolve(ModelConfig(preset="neox_1b"))
    assert b.intermediate_size == 6144 and b.intermediate_size % 128 == 0
    assert (a.hidden_size, a.num_hidden_layers, a.num_attention_heads) == (b.hidden_size, b.num_hidden_layers,
                                                                           b.num_attention_heads)
    # 30 more MLP columns per layer: 2 * 1536 * 30 weights + 30 biases, 24 layers
    diff = count_parameters(ModelConfig(preset="neox_1b"), 32000) - count_parameters(ModelConfig(preset="seed_1b"), 32000)
    assert diff == 24 * (2 * 1536 * 30 + 30)


@pytest.mark.parametrize("preset", ["small_160m", "tiny", "smoke"])
def test_breakdown_matches_built_model(preset):
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(hf_config(ModelConfig(preset=preset), 3000))
    assert count_parameters(model) == parameter_breakdown(ModelConfig(preset=preset), 3000)["total"]


def test_presets_shrink_in_order():
    counts = [count_parameters(ModelConfig(preset=p), 32000) for p in ("neox_1b", "small_160m", "tiny", "smoke")]
    assert counts == sorted(counts, reverse=True)
    assert 150e6 < counts[1] < 170e6


def test_build_model_uses_vocab_overrides_and_sdpa():
    cfg = ModelConfig(preset="smoke", num_hidden_layers=2)
    model = build_model(cfg, 777, seed=0)
    assert isinstance(model, GPTNeoXForCausalLM)
    assert model.config.vocab_size == 777 and model.config.num_hidden_layers == 2
    assert model.config.hidden_size == PRESETS["smoke"].hidden_size
    assert model.config._attn_implementation == "sdpa"
    again = build_model(cfg, 777, seed=0)
    assert torch.equal(model.gpt_neox.embed_in.weight, again.gpt_neox.embed_in.weight)  # seeded init


def test_build_model_follows_device_attention_and_tokenizer_ids():
    class Choice:
        attn_implementation = "eager"

    class Tok:
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 3

        def __len__(self):
            return 100

    model = build_model(ModelConfig(preset="smoke", num_hidden_layers=1), 128, device_choice=Choice(), tokenizer=Tok())
    assert model.config._attn_implementation == "eager"
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (1, 2, 3)
    explicit = build_model(ModelConfig(preset="smoke", num_hidden_layers=1, attn_implementation="sdpa"), 128,
                           device_choice=Choice())
    assert explicit.config._attn_implementation == "sdpa"


def test_smoke_model_forward_and_loss():
    model = build_model(ModelConfig(preset="smoke"), 500, seed=0)
    ids = torch.randint(0, 500, (2, 64))  # (B, T)
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 64, 500)
    assert abs(out.loss.item() - torch.log(torch.tensor(500.0)).item()) < 0.5  # near-uniform at init


def test_unknown_preset_suggests_the_close_one():
    with pytest.raises(ModelError, match=r"model.preset.*'seed_1bb'.*did you mean seed_1b"):
        resolve(ModelConfig(preset="seed_1bb"))


def test_heads_must_divide_hidden():
    with pytest.raises(ModelError, match=r"hidden_size=130 is not divisible by model.num_attention_heads=4"):
        resolve(ModelConfig(preset="smoke", hidden_size=130))


def test_sequence_longer_than_positions_is_refused():
    with pytest.raises(ModelError, match=r"sequence length 2048 is above the model's max_position_embeddings=1024"):
        check_compatible(ModelConfig(preset="seed_1b"), seq_len=2048)
    check_compatible(ModelConfig(preset="seed_1b"), seq_len=1024)
    model = build_model(ModelConfig(preset="smoke", num_hidden_layers=1), 100)
    with pytest.raises(ModelError, match="max_position_embeddings=256"):
        check_compatible(model.config, seq_len=257)


def test_tokenizer_vocab_above_models_is_refused():
    model = build_model(ModelConfig(preset="smoke", num_hidden_layers=1), 100)
    with pytest.raises(ModelError, match=r"tokenizer has 120 tokens but the model's vocab_size is 100"):
        check_compatible(model.config, tokenizer_vocab=120)

    class Tok:
        def __len__(self):
            return 120

    with pytest.raises(ModelError, match=r"tokenizer has 120 tokens but vocab_size=100"):
        build_model(ModelConfig(preset="smoke"), 100, tokenizer=Tok())


def test_vocab_size_must_be_positive():
    with pytest.raises(ModelError, match="vocab_size: expected a positive integer"):
        hf_config(ModelConfig(preset="smoke"), 0)
