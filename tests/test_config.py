import dataclasses
import json
import typing

import pytest

from nbhelpers import config


def test_profiles_resolve_and_real_ones_use_the_reports_settings():
    for name in config.PROFILES:
        cfg = config.load(name)
        assert cfg.profile == name
    for name in ("colab_t4", "kaggle_t4x2", "kaggle_tpu_v5e8"):
        cfg = config.load(name)
        assert cfg.tokenizer.vocab_size == 32000
        assert cfg.tokenizer.character_coverage == 0.9995
        assert cfg.tokenizer.byte_fallback and not cfg.tokenizer.split_by_whitespace
    # the TPU trains the seed's model; a T4 profile trains the size dial's shape it finishes (test_planner), and
    # the seed's model is two overrides away
    assert config.load("kaggle_tpu_v5e8").model.preset == "seed_1b"
    assert [config.load(n).model.preset for n in ("colab_t4", "kaggle_t4x2")] == ["d10", "d11"]
    for name in ("colab_t4", "kaggle_t4x2"):
        seed = config.load(name, ["model.preset=seed_1b", "train.gradient_checkpointing=true"])
        assert seed.model.preset == "seed_1b" and seed.train.optimizer == "adamw8bit"
    assert config.load("smoke").tokenizer.vocab_size < 8000


def test_the_size_dial_scales_width_and_depth_and_its_heads_divide_the_width():
    for depth in config.DEPTHS:
        p = config.PRESETS[f"d{depth}"]
        assert (p.num_hidden_layers, p.hidden_size, p.intermediate_size) == (depth, 64 * depth, 256 * depth)
        assert p.hidden_size % p.num_attention_heads == 0 and p.hidden_size // p.num_attention_heads == 64
        config.load("colab_t4", [f"model.preset=d{depth}"])  # every cross rule holds
    with pytest.raises(ValueError, match="depth"):
        config.depth_preset(0)
    with pytest.raises(config.ConfigError, match="model.preset"):
        config.load("colab_t4", ["model.preset=d99"])


def test_override_values_parse_as_json_or_string():
    cfg = config.load("smoke", ["train.lr=1e-3", "train.backend=cpu", 'corpus.mixture={"bundled_prose": 1}',
                                "train.sample_prompts=[\"a\", \"b\"]", "train.compile=true", "train.max_steps=1e3"])
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.backend == "cpu"
    assert cfg.corpus.mixture == {"bundled_prose": 1.0}
    assert cfg.train.sample_prompts == ("a", "b")
    assert cfg.train.compile is True
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)


def test_override_does_not_change_the_profile_default():
    config.load("smoke", ["train.lr=0.5"])
    assert config.load("smoke").train.lr != 0.5


def _refused(overrides, words):
    """Loading the smoke profile with `overrides` fails with a ConfigError holding every one of `words`."""
    with pytest.raises(config.ConfigError) as err:
        config.load("smoke", overrides)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.lrr=1", ["unknown config key 'train.lrr'", "train.lr"]),
        ("lr=1", ["unknown config key 'lr'", "train.lr", "sft.lr"]),
        ("train.lr=fast", ["train.lr", "expected float", "'fast'"]),
        ("train.micro_batch=2.5", ["train.micro_batch", "expected int"]),
        ("train.compile=1", ["train.compile", "expected bool"]),
        ('corpus.mixture={"a": "x"}', ["corpus.mixture.a", "expected float"]),
        ("train.lr", ["not key=value"]),
    ],
)
def test_bad_overrides_name_the_key_the_type_and_close_matches(override, words):
    _refused([override], words)


def test_unknown_profile_lists_known_ones():
    with pytest.raises(config.ConfigError, match="smoke"):
        config.load("smok")


def test_round_trip_through_json_and_fingerprint():
    cfg = config.load("smoke", ["train.lr=0.01"])
    again = config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert cfg.fingerprint("tokenizer") == config.load("smoke").fingerprint("tokenizer")
    assert cfg.fingerprint("train") != config.load("smoke").fingerprint("train")


def test_configs_are_frozen():
    cfg = config.load("smoke")
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------- rules checked when a configuration loads


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.micro_batch=0", ["train.micro_batch: expected >= 1, got 0"]),
        ("train.precision=fp8", ["train.precision: expected auto | fp32 | fp16 | bf16, got 'fp8'", "did you mean"]),
        ("train.lr=-1", ["train.lr: expected > 0, got -1.0"]),
        ("train.lr=NaN", ["train.lr: expected a finite number, got nan"]),
        ("train.optimizer=adam", ["train.optimizer: expected adamw | adamw8bit | muon, got 'adam'", "did you mean adamw"]),
        ("train.betas=[0.9, 1.5]", ["train.betas[1]: expected in [0, 1), got 1.5"]),
        ("train.min_lr_ratio=2", ["train.min_lr_ratio: expected in [0, 1], got 2.0"]),
        ("model.preset=seed_1bb", ["model.preset: expected seed_1b | neox_1b", "'seed_1bb'", "did you mean seed_1b"]),
        ("model.attn_implementation=flash", ["model.attn_implementation: expected auto | sdpa | eager"]),
        ("corpus.on_exhausted=loop", ["corpus.on_exhausted: expected repeat | stop, got 'loop'"]),
        ("corpus.symbol_level=1.5", ["corpus.symbol_level: expected in [0, 1], got 1.5"]),
        ('corpus.mixture={"wikipedia": 1}', ["corpus.mixture", "unknown source 'wikipedia'", "wikipedia_ja"]),
        ('corpus.mixture={"arithmetic": -1}', ["corpus.mixture['arithmetic']: expected >= 0, got -1.0"]),
        ('corpus.mixture={"arithmetic": 0}', ["corpus.mixture", "all weights are zero"]),
        ("corpus.on_bad_utf8=ignore", ["corpus.on_bad_utf8: expected error | skip"]),
        ("tokenizer.vocab_size=70000", ["tokenizer.vocab_size: expected in [355, 65536], got 70000", "uint16"]),
        ("tokenizer.character_coverage=0.9", ["tokenizer.character_coverage: expected in [0.98, 1]"]),
        ("tokenizer.normalization=nfd", ["tokenizer.normalization: expected nfkc"]),
        ("sft.overflow=truncate", ["sft.overflow: expected truncate_left | drop, got 'truncate'", "did you mean"]),
        ("sft.prompt_prefix=eot", ["sft.prompt_prefix: expected eos | bos | none"]),
        ("sft.on_invalid=warn", ["sft.on_invalid: expected error | skip"]),
        ("sft.replay_ratio=1", ["sft.replay_ratio: expected in [0, 1), got 1.0"]),
        ('sft.data=["dolly"]', ["sft.data", "unknown source 'dolly'", "bundled_instructions"]),
        ('sft.data=["hub:someone/set#instruction+input"]', ["sft.data", "PROMPT[+CONTEXT]>TARGET"]),
        ("sft.data=[]", ["sft.data: expected at least one instruction data name"]),
        ("eval.hub_source=hub", ["eval.hub_source: expected script_free | leaderboard"]),
        ('eval.num_fewshot={"ja_leaderboard_jsquad": -2}', ["eval.num_fewshot['ja_leaderboard_jsquad']: expected >= 0"]),
        ("eval.batch_size=0", ["eval.batch_size: expected >= 1, got 0"]),
    ],
)
def test_every_bad_value_is_named_when_the_configuration_loads(override, words):
    _refused([override], words)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["train.backend=xla", "train.precision=fp16"], ["fp16 is not supported on XLA"]),
        (["train.backend=cpu", "train.precision=fp16"], ["fp16 on the CPU"]),
        (["train.fsdp=true", "train.backend=cuda"], ["train.fsdp=true shards over XLA devices only"]),
        (["train.backend=xla", "train.nproc=8"], ["train.nproc=8: XLA trains in one process"]),
        (["corpus.block_len=512"], ["corpus.block_len=512 is above the model's max_position_embeddings=256"]),
        (["sft.max_length=300"], ["sft.max_length=300 is above the model's max_position_embeddings=256"]),
        (["model.hidden_size=130"], ["model.hidden_size=130 is not divisible by model.num_attention_heads=4"]),
        (['sft.template="Q: {prompt} A:"'], ["response marker '### 応答:' not found after {prompt}"]),
        (["sft.template=no slot"], ["needs exactly one {prompt} slot"]),
        (["sft.arithmetic_pairs=0"], ["arithmetic_pairs=0"]),
        (["eval.ppl_stride=256"], ["eval.ppl_stride=256: expected 0 or 1..255"]),
        (["eval.max_gen_toks=256"], ["eval.max_gen_toks=256: expected 0 or 1..255"]),
        (["eval.tasks=[]"], ["eval.tasks=[] with eval.lm_eval=true", "set eval.lm_eval=false for perplexity only"]),
        (["corpus.val_blocks=100000000"], ["makes a validation shard of 12,800,000,000 tokens",
                                           "use corpus.val_blocks <= 3,125"]),
    ],
)
def test_rules_across_fields_are_checked_when_the_configuration_loads(overrides, words):
    _refused(overrides, words)


def test_no_lm_eval_tasks_means_lm_eval_off():
    assert config.load("smoke", ["eval.tasks=[]", "eval.lm_eval=false"]).eval.tasks == ()


def test_every_problem_is_listed_at_once():
    with pytest.raises(config.ConfigError) as err:
        config.load("smoke", ["train.micro_batch=0", "train.lr=-1", "sft.overflow=x"])
    msg = str(err.value)
    assert msg.startswith("3 configuration problems:")
    assert "train.micro_batch" in msg and "train.lr" in msg and "sft.overflow" in msg


def test_a_broken_config_json_fails_in_from_dict():
    data = config.load("smoke").to_dict()
    data["train"]["micro_batch"] = 0
    with pytest.raises(config.ConfigError, match="train.micro_batch: expected >= 1, got 0"):
        config.from_dict(data)


def test_every_field_declares_a_rule():
    """A field added later declares what it accepts with setting(...) or a cross rule (contract 3 of the team brief)."""
    free_text = {"train.sample_prompts", "eval.tasks"}  # any prompts; lm-eval's registry is checked by 06
    crossed = {k for keys, _ in config.CROSS_RULES for k in keys}
    hints = {}
    undeclared = []
    for section in dataclasses.fields(config.RunConfig):
        if section.name == "profile":
            continue
        cls = typing.get_type_hints(config.RunConfig)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section.name}.{f.name}"
            if hints[f.name] is bool or "rule" in f.metadata or key in crossed or key in free_text:
                continue
            undeclared.append(key)
    assert undeclared == []


def test_sections_given_alone_are_checked_by_the_same_rules():
    from nbhelpers import device, model

    with pytest.raises(device.DeviceError, match="train.micro_batch: expected >= 1"):
        device.select(config.TrainConfig(micro_batch=0))
    with pytest.raises(model.ModelError, match="model.num_hidden_layers: expected >= 0, got -1"):
        model.resolve(config.ModelConfig(preset="tiny", num_hidden_layers=-1))
    with pytest.raises(ValueError, match="corpus.workers: expected >= 0, got -2"):
        config.check_value("corpus.workers", -2, ValueError)


def test_cli_run_with_a_bad_value_fails_before_any_notebook_and_keeps_config_json(tmp_path, capsys):
    from nbhelpers.__main__ import main

    notebooks_dir = tmp_path / "notebooks"
    notebooks_dir.mkdir()
    (notebooks_dir / "01_tokenizer.py").write_text('# %% tags=["parameters"]\nPROFILE = "smoke"\n'
                                                   'RUN_DIR = ""\nOVERRIDES = []\n', encoding="utf-8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"written": "before"}', encoding="utf-8")
    code = main(["run", "--profile", "smoke", "--run-dir", str(run_dir), "--notebooks", str(notebooks_dir),
                 "--set", "train.micro_batch=0"])
    assert code == 1
    assert "error: train.micro_batch: expected >= 1, got 0" in capsys.readouterr().err
    assert (run_dir / "config.json").read_text(encoding="utf-8") == '{"written": "before"}'
    assert not (run_dir / "notebooks").exists()
