"""The chat template (equal to the tuning format), conversations of several turns, and `python -m nbhelpers chat`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from char_tokenizer import char_tokenizer
from jinja2 import TemplateError
from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

from nbhelpers import chat, config, sft
from nbhelpers import tokenizer as tok_mod
from nbhelpers.chat_format import ChatFormatError, chat_template, check_messages, render
from nbhelpers.collator import IGNORE, OverflowStats, build_conversation, build_example, conversation_ids, prompt_ids
from nbhelpers.generate import generate_batch

ROOT = Path(__file__).resolve().parents[1]
T = "Q{prompt}A"  # char-level template: head "Q", tail "A"
CHARS = "QAab12xyz指示応答#:\n "


def _ids(out):
    """apply_chat_template's ids: a list (transformers 4) or a BatchEncoding (5)."""
    return list(out["input_ids"]) if isinstance(out, Mapping) else list(out)


@pytest.fixture(scope="session")
def sp_dir(tokenizer_dir, tmp_path_factory):
    """The project's Hugging Face tokenizer (SentencePiece export) of the small test model."""
    out = tmp_path_factory.mktemp("hf_tok")
    shutil.copy(tokenizer_dir / tok_mod.SPM_FILE, out / tok_mod.SPM_FILE)
    tok_mod.export_hf(out)
    return out


def bigram_model(vocab: int, chain: dict[int, int], eos: int = 3, context: int = 256) -> GPTNeoXForCausalLM:
    """A GPT-NeoX whose next token is chain[current] (else EOS): one-hot residual stream, attention and MLP zeroed."""
    hidden = -(-vocab // 8) * 8
    cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8, max_position_embeddings=context, eos_token_id=eos, pad_token_id=1,
                        bos_token_id=2, tie_word_embeddings=False)
    model = GPTNeoXForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            for lin in (layer.attention.dense, layer.mlp.dense_4h_to_h):
                lin.weight.zero_()
                lin.bias.zero_()
        model.get_input_embeddings().weight.copy_(torch.eye(vocab, hidden))
        w = torch.zeros(vocab, hidden)
        for t in range(vocab):
            w[chain.get(t, eos), t] = 30.0
        model.get_output_embeddings().weight.copy_(w)
    return model.eval()


@pytest.fixture(scope="session")
def answer_chain(sp_dir):
    """After the generation prompt's last token: 東, 京, EOS; after EOS: 東 again (so only stopping at EOS ends it)."""
    tok = AutoTokenizer.from_pretrained(sp_dir)
    vocab = tok.get_vocab()
    east, capital = vocab["東"], vocab["京"]
    last = prompt_ids(tok, "x")[0][-1]  # the generation prompt's last token
    return tok, {last: east, east: capital, capital: 3, 3: east}


@pytest.fixture(scope="session")
def run_dir(sp_dir, answer_chain, tmp_path_factory):
    """A run directory with config.json, pretrain/final and sft/final (tokenizer with the chat template)."""
    tok, chain = answer_chain
    root = tmp_path_factory.mktemp("run")
    cfg = config.load("smoke")
    (root / "config.json").write_text(json.dumps(cfg.to_dict(), ensure_ascii=False), encoding="utf-8")
    model = bigram_model(len(tok), chain, context=64)
    for stage in ("pretrain", "sft"):
        final = root / stage / "final"
        model.save_pretrained(final)
        t = AutoTokenizer.from_pretrained(sp_dir)
        if stage == "sft":
            sft.attach_chat_template(t, cfg.sft)
        t.save_pretrained(final)
    return root


# ---------------------------------------------------------------- the template equals the tuning format


def test_sft_final_template_gives_the_collators_prompt_for_every_bundled_prompt(sp_dir, run_dir):
    """apply_chat_template on sft/final's own tokenizer == the collator's prompt ids, over the bundled set."""
    cfg = config.load("smoke").sft
    run_tok = AutoTokenizer.from_pretrained(sp_dir)  # the run's tokenizer: no template, the config's format
    final_tok = AutoTokenizer.from_pretrained(run_dir / "sft" / "final")
    assert final_tok.chat_template == chat_template(cfg.template, cfg.prompt_prefix)
    examples = sft.load_source("bundled_instructions", cfg)
    assert len(examples) >= 100
    for ex in examples:
        row = build_example(run_tok, ex.prompt, ex.target, 1 << 20, template=cfg.template, prefix=cfg.prompt_prefix)
        context = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab == IGNORE]
        got = _ids(final_tok.apply_chat_template([{"role": "user", "content": ex.prompt}], add_generation_prompt=True))
        assert got == context, ex.where
        assert got[0] == 3 and got[1] == final_tok.convert_tokens_to_ids("▁")  # EOS, then the text as after EOS


@pytest.mark.parametrize("prefix, opener", [("eos", "</s>"), ("bos", "<s>"), ("none", "")])
def test_template_text_for_one_and_several_turns(prefix, opener):
    tok = char_tokenizer(CHARS)
    one = [{"role": "user", "content": "ab"}]
    assert render(tok, one, T, prefix, add_generation_prompt=True) == f"{opener}QabA"
    assert render(tok, one, T, prefix) == f"{opener}Qab"  # no generation prompt unless asked
    two = [*one, {"role": "assistant", "content": "12"}, {"role": "user", "content": "x"}]
    again = opener if prefix == "bos" else ""  # EOS ends the answer: with prefix eos it also opens the next turn
    assert render(tok, two, T, prefix, add_generation_prompt=True) == f"{opener}QabA12</s>{again}QxA"


def test_system_message_joins_the_first_prompt_and_bad_roles_are_template_errors():
    tok = char_tokenizer(CHARS)
    msgs = [{"role": "system", "content": "xy"}, {"role": "user", "content": "ab"}]
    assert render(tok, msgs, T, add_generation_prompt=True) == "</s>Qxy\n\nabA"
    tok.chat_template = chat_template(T)
    for bad, why in [([{"role": "assistant", "content": "1"}], "expected user"),
                     ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "expected assistant"),
                     ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "has role system")]:
        with pytest.raises(TemplateError, match=why):  # any tool using the template gets the reason
            tok.apply_chat_template(bad, tokenize=False)
        with pytest.raises(ChatFormatError):
            render(tok, bad, T)
        with pytest.raises(ChatFormatError, match="message"):
            check_messages(bad)
    with pytest.raises(ChatFormatError, match="content"):
        check_messages([{"role": "user", "content": ["a"]}])


def test_template_keeps_braces_quotes_and_jinja_syntax_of_the_configured_text():
    tok = char_tokenizer(CHARS + '{}%"\\')
    odd = 'x{{ "a" }}\\{%\n{prompt}\n"%}'
    assert render(tok, [{"role": "user", "content": "ab"}], odd, "none", True) == odd.replace("{prompt}", "ab")


# ---------------------------------------------------------------- several turns tune through the template


def test_conversation_trains_only_the_answers_each_ending_with_eos():
    tok = char_tokenizer(CHARS)
    v = tok.get_vocab()
    msgs = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "12"},
            {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    ids, labels = conversation_ids(tok, msgs, T)
    Q, A, a, b, one, two, x, y = (v[c] for c in "QAab12xy")
    assert ids == [3, Q, a, b, A, one, two, 3, Q, x, A, y, 3]
    assert labels == [IGNORE] * 5 + [one, two, 3] + [IGNORE] * 3 + [y, 3]
    single = build_example(tok, "ab", "12", 64, template=T)
    assert build_conversation(tok, msgs[:2], 64, template=T)["input_ids"] == single["input_ids"]  # one turn: the same
    assert tok.decode(ids) == render(tok, msgs, T)  # the ids are the template's text


def test_long_conversation_drops_its_oldest_turns_or_the_example():
    tok = char_tokenizer(CHARS)
    msgs = [{"role": "user", "content": "aaaa"}, {"role": "assistant", "content": "1111"},
            {"role": "user", "content": "b"}, {"role": "assistant", "content": "2"}]
    stats = OverflowStats()
    row = build_conversation(tok, msgs, 8, template=T, stats=stats)
    assert row["input_ids"] == conversation_ids(tok, msgs[2:], T)[0]  # the first exchange left out
    assert (stats.truncated, stats.truncated_tokens) == (1, 11)  # 17 tokens, 6 kept
    assert build_conversation(tok, msgs, 8, template=T, overflow="drop", stats=stats) is None
    assert build_conversation(tok, msgs, 4, template=T, stats=stats) is None  # the last exchange alone is too long
    assert stats.dropped == 2


def test_messages_jsonl_loads_validates_and_encodes(tmp_path, sp_dir):
    path = tmp_path / "chat.jsonl"
    conv = {"messages": [{"role": "system", "content": "丁寧に答えてください。"},
                         {"role": "user", "content": "日本の首都は？"}, {"role": "assistant", "content": "東京です。"},
                         {"role": "user", "content": "人口は？"}, {"role": "assistant", "content": "約1400万人です。"}]}
    path.write_text(json.dumps(conv, ensure_ascii=False) + "\n" + json.dumps({"prompt": "a", "target": "b"}) + "\n",
                    encoding="utf-8")
    cfg = config.load("smoke").sft
    [ex, plain] = sft.load_source(f"files:{path}", cfg)
    assert (ex.prompt, ex.target) == ("丁寧に答えてください。\n\n日本の首都は？", "東京です。")
    assert plain.messages is None
    tok = AutoTokenizer.from_pretrained(sp_dir)
    [row, _], stats = sft.encode(tok, [ex, plain], cfg)
    trained = [t for t in row["labels"] if t != IGNORE]
    assert tok.decode(trained, skip_special_tokens=True).replace(" ", "") == "東京です。約1400万人です。"
    assert trained.count(3) == 2 and trained[-1] == 3  # each answer ends with EOS
    assert stats.examples == 2


def test_hub_dataset_with_a_messages_column(monkeypatch):
    import datasets

    rows = [{"conversations": [{"role": "user", "content": "足して", "extra": 1}, {"role": "assistant", "content": "3"}]},
            {"conversations": [{"role": "assistant", "content": "はい"}]}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    with pytest.raises(sft.InstructionDataError, match="someone/chat row 1: message 0 has role 'assistant'"):
        sft.load_source("hub:someone/chat#conversations", config.SFTConfig())
    [ex] = sft.load_source("hub:someone/chat#conversations", config.SFTConfig(on_invalid="skip"))
    assert ex.messages == ({"role": "user", "content": "足して"}, {"role": "assistant", "content": "3"})
    assert sft.data_name_problem("hub:someone/chat#conversations") is None


@pytest.mark.parametrize("line, message", [
    ('{"messages": []}', "non-empty list"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "ends with a user message"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]}', "empty assistant"),
    ('{"messages": [{"role": "bot", "content": "a"}]}', "roles are"),
])
def test_bad_messages_lines_are_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(sft.InstructionDataError, match=f"{path.name} line 1.*{message}"):
        sft.read_jsonl(path)


# ---------------------------------------------------------------- Hugging Face tools and our chat


def test_pipeline_given_messages_answers_in_the_format_and_stops_at_eos(run_dir):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(run_dir / "sft" / "final"), device="cpu")
    out = pipe([{"role": "user", "content": "日本の首都はどこですか？"}], max_new_tokens=12, do_sample=False)
    assert out[0]["generated_text"][-1] == {"role": "assistant", "content": "東京"}  # EOS -> 東 again if not stopped


def test_session_keeps_history_and_trims_it_to_the_context(run_dir):
    session = chat.load(run_dir, max_new_tokens=8)
    assert session.ask("日本の首都はどこですか？").text == "東京"
    assert len(session.messages) == 2
    for _ in range(3):
        session.ask("日本の首都はどこですか？")
    assert session.trimmed("日本の首都はどこですか？") > 0  # 64 positions hold only a few exchanges
    session.ask("日本の首都はどこですか？")
    assert 2 <= len(session.messages) < 10  # the oldest exchanges were forgotten
    session.reset()
    assert session.messages == []


def test_answers_stream_token_by_token_to_the_given_output(run_dir):
    import io

    session = chat.load(run_dir, max_new_tokens=8)
    out = io.StringIO()
    streamer = chat.text_streamer(session.tokenizer, out)
    pieces = []
    original = streamer.on_finalized_text
    streamer.on_finalized_text = lambda text, stream_end=False: (pieces.append(text), original(text, stream_end))
    assert session.ask("日本の首都は？", streamer=streamer).text == "東京"
    assert out.getvalue() == "東京\n" and len([p for p in pieces if p]) == 2  # one piece per token, then the end
    with pytest.raises(ValueError, match="one prompt"):
        generate_batch(session.model, session.tokenizer, ["a", "b"], streamer=streamer, max_new_tokens=4)


def _cli(run_dir, text, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "nbhelpers", "chat", "--run-dir", str(run_dir), *args], input=text,
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_chat_streams_answers_with_history_reset_and_exit(run_dir):
    turns = "日本の首都はどこですか？\n" * 5 + "/reset\nもう一度\n/exit\nこれは読まれない\n"
    proc = _cli(run_dir, turns, "--temperature", "0", "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("model> 東京\n") == 6
    assert "oldest exchange(s) no longer fit" in proc.stdout
    assert "(conversation reset)" in proc.stdout
    assert "読まれない" not in proc.stdout


def test_cli_without_a_tuned_model_names_the_notebook_or_falls_back(run_dir, tmp_path):
    base_only = tmp_path / "run"
    shutil.copytree(run_dir, base_only)
    shutil.rmtree(base_only / "sft")
    proc = _cli(base_only, "/exit\n")
    assert proc.returncode == 1
    assert "04_instruction_tuning" in proc.stderr and "--stage pretrain" in proc.stderr
    sampled = ["--temperature", "0.8", "--top-p", "0.9", "--top-k", "5", "--seed", "3", "--repetition-penalty", "1.2"]
    proc = _cli(base_only, "日本の首都は？\n", "--stage", "pretrain", "--no-stream", *sampled)
    assert proc.returncode == 0, proc.stderr
    assert "never tuned" in proc.stdout and "model> 東京" in proc.stdout
    proc = _cli(tmp_path / "nowhere", "")
    assert proc.returncode == 1 and "not a run directory" in proc.stderr
    proc = _cli(run_dir, "", "--top-p", "0", "--temperature", "-1")
    assert proc.returncode == 1 and "--temperature must be >= 0" in proc.stderr and "--top-p must be in (0, 1]" in proc.stderr


# ---------------------------------------------------------------- the web chat, in a real browser

WEB_MISSING = [name for name, found in [
    ("gradio (pip install -e .[web])", importlib.util.find_spec("gradio")),
    ("selenium (pip install -e .[web])", importlib.util.find_spec("selenium")),
    ("chromium (apt-get install chromium)", shutil.which("chromium")),
    ("chromedriver (apt-get install chromium-driver)", shutil.which("chromedriver"))] if not found]


@pytest.mark.web
@pytest.mark.skipif(bool(WEB_MISSING), reason=f"needs {', '.join(WEB_MISSING)}")
def test_web_chat_answers_in_headless_chromium(answer_chain, monkeypatch):
    """Debian's chromium opens the gradio page, sends a message and reads the streamed answer from the page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: this machine has no network
    tok, chain = answer_chain
    cfg = config.load("smoke").sft
    session = chat.Session(bigram_model(len(tok), chain, context=256), tok, cfg.template, cfg.prompt_prefix, 8)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = chat.web_chat(session, share=False, install=False, server_name="127.0.0.1", server_port=port,
                         prevent_thread_lock=True, quiet=True)
    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        box = WebDriverWait(driver, 90).until(expected_conditions.element_to_be_clickable((By.TAG_NAME, "textarea")))
        box.send_keys("日本の首都はどこですか？")
        box.send_keys(Keys.ENTER)
        WebDriverWait(driver, 90).until(lambda d: "東京" in d.find_element(By.TAG_NAME, "body").text)
        assert session.messages == [{"role": "user", "content": "日本の首都はどこですか？"},
                                    {"role": "assistant", "content": "東京"}]
        box = WebDriverWait(driver, 90).until(expected_conditions.element_to_be_clickable((By.TAG_NAME, "textarea")))
        box.send_keys("もう一度")  # the second turn carries the page's history to the model
        box.send_keys(Keys.ENTER)
        WebDriverWait(driver, 90).until(lambda d: d.find_element(By.TAG_NAME, "body").text.count("東京") == 2)
        assert [m["content"] for m in session.messages] == ["日本の首都はどこですか？", "東京", "もう一度", "東京"]
    finally:
        driver.quit()
        demo.close()
