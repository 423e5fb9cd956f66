"""Model cards: README.md with Hub metadata for pretrain/final and sft/final, written from the run's records."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

from .files import atomic_write_text, read_json
from .layout import CONFIG_FILE, EVAL, FINAL
from .licences import licence_of, model_licence
from .report import TRAINING_HEADER, data_section, evaluation_section, fmt, load_records, table, training_rows

CARD_FILE = "README.md"
STAGE_NAMES = {"pretrain": "pre-trained (base) model", "sft": "instruction-tuned model"}
ARCH_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "rotary_pct", "vocab_size", "tie_word_embeddings")


def final_dir(root: str | Path, stage: str) -> Path:
    """`root/stage/final`, or a FileNotFoundError naming the notebook that writes it."""
    if stage not in STAGE_NAMES:
        raise ValueError(f"stage: expected pretrain or sft, got {stage!r}")
    path = Path(root) / stage / FINAL
    if not (path / CONFIG_FILE).is_file():
        notebook = "03_pretrain" if stage == "pretrain" else "04_instruction_tuning"
        raise FileNotFoundError(f"{path}: no final model (config.json not found); run notebooks/{notebook} to the end "
                                "first")
    return path


def _sources(config: dict[str, Any], stage: str) -> list[str]:
    names = list((config.get("corpus", {}) or {}).get("mixture", {}) or {})
    if stage == "sft":
        names += list((config.get("sft", {}) or {}).get("data", []) or [])
    return names


def card_metadata(config: dict[str, Any], stage: str, base_model: str | None = None) -> Any:
    """huggingface_hub's ModelCardData for the stage: language, licence, datasets, pipeline, library, tags."""
    from huggingface_hub import ModelCardData

    names = _sources(config, stage)
    datasets = sorted({licence_of(n).dataset for n in names if licence_of(n).dataset})
    tags = ["gpt_neox", "japanese", "nbhelpers", "from-scratch"] + (["instruction-tuned", "conversational"]
                                                                    if stage == "sft" else ["base-model"])
    extra = {"base_model": base_model} if base_model else {}
    return ModelCardData(language="ja", license=model_licence(names), datasets=datasets or None,
                         pipeline_tag="text-generation", library_name="transformers", tags=tags, **extra)


def _architecture(folder: Path) -> list[list[Any]]:
    cfg = read_json(folder / CONFIG_FILE)
    return [[k, cfg[k]] for k in ARCH_FIELDS if k in cfg]


def _prompt_section(config: dict[str, Any], stage: str, repo_id: str, folder: Path) -> str:
    sft = config.get("sft", {}) or {}
    template = sft.get("template", "{prompt}")
    prefix = sft.get("prompt_prefix", "eos")
    if stage == "pretrain":
        return "\n".join([
            "A base model: it continues text; it was not tuned to follow instructions.", "", "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
            'ids = tokenizer("日本の首都は", return_tensors="pt")',
            "out = model.generate(**ids, max_new_tokens=40, do_sample=True, top_p=0.9)",
            "print(tokenizer.decode(out[0], skip_special_tokens=True))", "```"])
    has_template = _has_chat_template(folder)
    lines = [
        f"Tuned on one format (the run's `sft.template`, after a {prefix!r} prompt prefix); only the answer and "
        "the EOS after it were trained:", "", "```text", template, "```", ""]
    if has_template:
        lines += ["The tokenizer carries a chat template that writes exactly this prompt:", "", "```python",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
                  f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
                  'messages = [{"role": "user", "content": "日本の首都はどこですか？"}]',
                  'ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
                  'return_dict=True)',
                  "out = model.generate(**ids, max_new_tokens=128, eos_token_id=tokenizer.eos_token_id)",
                  'print(tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))', "```", ""]
    else:
        lines += ["This tokenizer carries no chat template: write the prompt yourself, after the prefix token:", "",
                  "```python", "import torch", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
                  f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
                  f"template = {json.dumps(template, ensure_ascii=False)}",
                  f'prefix = {{"eos": [tokenizer.eos_token_id], "bos": [tokenizer.bos_token_id], "none": []}}'
                  f'[{prefix!r}]',
                  'prompt = template.format(prompt="日本の首都はどこですか？")',
                  "ids = torch.tensor([prefix + tokenizer(prompt, add_special_tokens=False)[\"input_ids\"]])",
                  "out = model.generate(ids, max_new_tokens=128, eos_token_id=tokenizer.eos_token_id)",
                  "print(tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True))", "```", ""]
    lines += ["With nbhelpers installed, its own generation writes the same prompt (greedy, stops at EOS):", "",
              "```python", "import nbhelpers", "",
              f"answer = nbhelpers.generate.generate(model, tokenizer, \"日本の首都はどこですか？\", "
              f"template={json.dumps(template, ensure_ascii=False)}, prefix={prefix!r}, max_new_tokens=128)",
              "print(answer)", "```"]
    return "\n".join(lines)


def _has_chat_template(folder: Path) -> bool:
    """Whether the saved tokenizer carries a chat template (chat_template.jinja or tokenizer_config.json's key)."""
    if (folder / "chat_template.jinja").is_file():
        return True
    cfg = folder / "tokenizer_config.json"
    return cfg.is_file() and bool(read_json(cfg).get("chat_template"))


LIMITATIONS = [
    "Small and trained briefly on free notebook hardware: it makes up facts, repeats itself and gets arithmetic "
    "wrong; do not rely on what it says.",
    "Japanese only; other languages were not in the training data on purpose.",
    "Web text (C4) carries the biases and errors of the web; nothing was filtered for safety beyond cleaning.",
    "Not aligned for safety: it was not tuned to refuse harmful requests.",
]


def render_card(root: str | Path, stage: str, repo_id: str | None = None, base_model: str | None = None) -> str:
    """The model card (README.md text) of `root/stage/final`, from the run's records."""
    from huggingface_hub import ModelCard

    folder = final_dir(root, stage)
    rec = load_records(root)
    meta = card_metadata(rec.config, stage, base_model)
    name = repo_id or f"{Path(rec.root).name}-{stage}"
    pre = rec.metrics.get("pretrain") or {}
    rows = [r for r in training_rows(rec) if stage == "sft" or r[0] == "pretrain"]
    tokens = sum(r[2] for r in rows)
    hours = sum(r[3] for r in rows)
    summary = (f"A Japanese GPT-NeoX {STAGE_NAMES[stage]} trained from nothing with "
               f"[nbhelpers](https://github.com/nbhelpers/nbhelpers): {fmt(pre.get('parameters'))} parameters, "
               f"{fmt(tokens)} tokens in {hours:.2f} hours of training on {pre.get('device') or 'an unrecorded device'}.")
    lic = model_licence(_sources(rec.config, stage))
    licence_note = (f"Licence `{lic}`: " + ("the training data include ShareAlike sources (CC BY-SA), so the weights "
                    "are shared under CC BY-SA 4.0, which CC names as a compatible later version."
                    if lic == "cc-by-sa-4.0" else "the licence the training data share."))
    evaluation = evaluation_section(rec.results, models=[stage])
    body = [f"# {name}", "", summary, "", "## Model", "", table(["field", "value"], _architecture(folder)), "",
            "## Training", "", table(TRAINING_HEADER, rows) if rows else "No training records were found.", "",
            "## Data", "", data_section(rec, stage), "", licence_note, "",
            "## Evaluation", "", evaluation or "Not evaluated yet: notebook 06 writes this section.", "",
            "## How to prompt it", "", _prompt_section(rec.config, stage, name, folder), "",
            "## Limitations", "", *[f"- {line}" for line in LIMITATIONS], "",
            f"Generated by nbhelpers from the records in `{Path(rec.root).name}/` (config.json, metrics.json, "
            "metrics.jsonl, eval/results.json); figures are not edited by hand."]
    card = ModelCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
    return str(card)


def write_card(root: str | Path, stage: str, repo_id: str | None = None, base_model: str | None = None) -> Path:
    """Write `root/stage/final/README.md` from the run's records; return its path.

    A final/ that cannot be written (a stage finished by an earlier Kaggle version, linked read-only into this
    run) gets its card in eval/<stage>_README.md instead, and `python -m nbhelpers push` writes a fresh one into
    the upload anyway.
    """
    text = render_card(root, stage, repo_id, base_model)
    path = final_dir(root, stage) / CARD_FILE
    try:
        atomic_write_text(path, text)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        path = Path(root) / EVAL / f"{stage}_{CARD_FILE}"
        atomic_write_text(path, text)
        print(f"{Path(root) / stage / 'final'} is read-only: its model card is in {path}")
    return path


def write_cards(root: str | Path) -> list[Path]:
    """Refresh the card of every stage that has a final model (06 calls it after writing results.json)."""
    return [write_card(root, stage) for stage in STAGE_NAMES
            if (Path(root) / stage / FINAL / CONFIG_FILE).is_file()]
