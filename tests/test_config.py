import json

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
        assert cfg.model.preset in ("seed_1b", "neox_1b")
    assert config.load("smoke").tokenizer.vocab_size < 8000


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
    with pytest.raises(config.ConfigError) as err:
        config.load("smoke", [override])
    for word in words:
        assert word in str(err.value)


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
