"""Uploads to the Hugging Face Hub: a stage's final/ as half-precision safetensors with its tokenizer and model card.

The token comes only from Kaggle secrets, Colab userdata or HF_TOKEN (`credentials`), and is never shown.
Upload order: the repository is created (private unless asked), the folder is staged (weights cast to
bf16/fp16, everything else copied, README.md written from the run's records), then one commit uploads
it. A failure names the step; running the same command again finishes it (content the Hub already holds
is not sent again).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .credentials import HF_TOKEN_PATTERN, Secret, platform_secret, scrub
from .layout import CONFIG_FILE
from .platform import Platform, PlatformError

__all__ = ["HF_TOKEN_PATTERN", "Secret", "scrub", "hf_token", "find_secrets", "check_repo_id", "plan_upload",
           "stage_folder", "push_to_hub", "push_stage", "format_plan", "PushFile", "PUSH_DTYPES", "PlatformError"]

PUSH_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
WEIGHT_INDEX = "model.safetensors.index.json"
NOT_UPLOADED = ("README.md", WEIGHT_INDEX, "training_args.bin")  # README is written fresh; the index is rewritten
NO_TOKEN = ("no Hugging Face token: add HF_TOKEN in Kaggle (Add-ons -> Secrets) or Colab (the key icon, with "
            "notebook access), or set the HF_TOKEN environment variable (a token with write access)")


def hf_token(name: str = "HF_TOKEN", platform: Platform | None = None,
             environ: Mapping[str, str] | None = None) -> Secret | None:
    """The Hugging Face token from Kaggle secrets, Colab userdata or the environment, or None."""
    return platform_secret(name, platform, environ)


def export_hf_token(name: str = "HF_TOKEN", platform: Platform | None = None) -> str:
    """Put the platform's Hugging Face token in the environment as HF_TOKEN, for reads too; says where it came from.

    Anonymous hub reads are limited per IP address (500 API calls and 3,000 file downloads per 5 minutes), and
    a notebook host's address is shared: with a token, huggingface_hub, datasets and the corpus reader (and the
    processes they start, which inherit the environment) count against the user's own, higher limits. The
    token itself is never printed; an HF_TOKEN already set is kept.
    """
    if os.environ.get("HF_TOKEN", "").strip():
        return "HF_TOKEN: already set in the environment (kept)"
    token = hf_token(name, platform)
    if token is None:
        return ("HF_TOKEN: none found; hub reads are anonymous (limited per IP address). Add HF_TOKEN in Kaggle "
                "(Add-ons -> Secrets) or Colab (the key icon, with notebook access) for your own limits")
    os.environ["HF_TOKEN"] = token.reveal()
    return f"HF_TOKEN: set from {token.source} (hub reads count against your account's limits)"


def check_repo_id(repo_id: str) -> str:
    """`repo_id` when it reads owner/name (letters, digits, `-`, `_`, `.`), else a ValueError saying so."""
    if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id:
        raise ValueError(f"repo: expected 'owner/name' (your Hub user or organisation, a slash, the model's name; "
                         f"letters, digits, '-', '_', '.'), got {repo_id!r}")
    return repo_id


@dataclass(frozen=True)
class PushFile:
    """One file of an upload: its name in the repository, its size in bytes, and where it comes from."""

    path: str
    size: int
    note: str = ""


def _weights(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def _check_folder(folder: Path) -> None:
    missing = [f for f in (CONFIG_FILE, "tokenizer_config.json") if not (folder / f).is_file()]
    if not folder.is_dir() or missing or not _weights(folder):
        what = "the folder" if not folder.is_dir() else ", ".join(missing + ([] if _weights(folder) else
                                                                          ["*.safetensors"]))
        bins = list(folder.glob("pytorch_model*.bin")) if folder.is_dir() else []
        hint = (" (it holds only pytorch_model*.bin: load it and save_pretrained it again, which writes safetensors)"
                if bins else "")
        raise FileNotFoundError(f"{folder}: {what} not found{hint}; push a final/ folder written by the training "
                                "loop (03 writes pretrain/final, 04 sft/final)")


def _half_size(path: Path) -> int:
    """The size a safetensors file will have with its floating tensors in 2 bytes (header estimated unchanged)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    size = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        size += (end - start) // 2 if info["dtype"] in ("F32", "F64") else end - start
    return size


def _copied(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix != ".safetensors" and p.name not in NOT_UPLOADED)


def plan_upload(folder: str | os.PathLike, dtype: str = "bf16", card: bool = True) -> list[PushFile]:
    """The files an upload of `folder` sends, with sizes (weights at `dtype`), without writing anything."""
    folder = Path(folder)
    _check_folder(folder)
    _check_dtype(dtype)
    files = [PushFile(p.name, _half_size(p), f"{dtype} from {p.stat().st_size:,} bytes on disk")
             for p in _weights(folder)]
    for p in _copied(folder):
        note = ("the chat template" if p.name == "chat_template.jinja" else "with chat_template"
                if p.name == "tokenizer_config.json" and "chat_template" in p.read_text(encoding="utf-8") else "")
        files.append(PushFile(p.name, p.stat().st_size, note))
    if card:
        files.append(PushFile("README.md", 0, "model card, written from the run's records"))
    return sorted(files, key=lambda f: f.path)


def _check_dtype(dtype: str) -> None:
    if dtype not in PUSH_DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(PUSH_DTYPES)}, got {dtype!r}")


def stage_folder(folder: str | os.PathLike, out: str | os.PathLike, dtype: str = "bf16",
                 card_text: str | None = None) -> list[PushFile]:
    """Write what the upload sends into `out`: weights cast to `dtype`, other files copied, README.md = card_text."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder, out = Path(folder), Path(out)
    _check_folder(folder)
    _check_dtype(dtype)
    out.mkdir(parents=True, exist_ok=True)
    target = getattr(torch, PUSH_DTYPES[dtype])
    index: dict[str, str] = {}
    total = 0
    for path in _weights(folder):
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                t = f.get_tensor(name)
                tensors[name] = t.to(target) if t.is_floating_point() else t
                index[name] = path.name
                total += tensors[name].numel() * tensors[name].element_size()
        save_file(tensors, str(out / path.name), metadata={**meta, "format": "pt"})
        del tensors
    for p in _copied(folder):
        shutil.copy2(p, out / p.name)
    config = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    key = next((k for k in ("dtype", "torch_dtype") if k in config), "dtype")
    config[key] = PUSH_DTYPES[dtype]  # what from_pretrained loads it as by default
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if (folder / WEIGHT_INDEX).is_file():
        (out / WEIGHT_INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": index},
                                                   indent=2) + "\n", encoding="utf-8")
    if card_text is not None:
        (out / "README.md").write_text(card_text, encoding="utf-8")
    return [PushFile(p.name, p.stat().st_size) for p in sorted(out.iterdir()) if p.is_file()]


def push_to_hub(folder: str | os.PathLike, repo_id: str, token: Secret | None = None, private: bool = True,
                message: str = "Upload from nbhelpers", dtype: str = "bf16", card_text: str | None = None,
                endpoint: str | None = None, scratch: str | os.PathLike | None = None) -> str:
    """Upload a final/ folder (weights as `dtype` safetensors, tokenizer, config, card) to the Hub; return its URL."""
    folder = Path(folder)
    _check_folder(folder)
    check_repo_id(repo_id)
    _check_dtype(dtype)
    token = token if token is not None else hf_token()
    if token is None:
        raise PlatformError(NO_TOKEN)
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token.reveal(), endpoint=endpoint)
    step = f"creating the repository {repo_id} ({'private' if private else 'public'})"
    try:
        url = str(api.create_repo(repo_id, private=private, exist_ok=True))
        with tempfile.TemporaryDirectory(prefix="nbhelpers-push-", dir=scratch) as tmp:
            step = f"converting {folder} to {dtype} in {tmp}"
            staged = stage_folder(folder, tmp, dtype, card_text)
            total = sum(f.size for f in staged)
            step = f"uploading {len(staged)} files ({total / 1e6:,.1f} MB) to {repo_id}"
            ops = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(Path(tmp) / f.path)) for f in staged]
            api.create_commit(repo_id, operations=ops, commit_message=message)
    except Exception as err:  # re-raised without anything that could quote the token
        detail = scrub(f"{type(err).__name__}: {err}", token)
        raise PlatformError(f"push to {repo_id} failed while {step}: {detail}. Nothing in {folder} was changed; "
                            "run the same command again to retry (what the Hub already holds is not sent "
                            "again)") from None
    return url


def push_stage(run_dir: str | os.PathLike, stage: str, repo_id: str, public: bool = False, dry_run: bool = False,
               dtype: str = "bf16", token: Secret | None = None, endpoint: str | None = None) -> str | list[PushFile]:
    """Upload a run's `stage`/final (pretrain or sft) with a fresh model card; dry_run: the files and sizes only."""
    from .model_card import final_dir, render_card

    check_repo_id(repo_id)
    folder = final_dir(run_dir, stage)  # names the notebook to run when there is no final/
    if dry_run:
        return plan_upload(folder, dtype)
    card = render_card(run_dir, stage, repo_id=repo_id)
    return push_to_hub(folder, repo_id, token=token, private=not public, dtype=dtype, card_text=card,
                       endpoint=endpoint, message=f"Upload {stage} model from nbhelpers")


def format_plan(files: list[PushFile], repo_id: str, public: bool) -> str:
    """A dry run's listing: one line per file with its size, then the total."""
    lines = [f"would upload to {repo_id} ({'public' if public else 'private'}):"]
    lines += [f"  {f.path:<34} {f.size / 1e6:>10,.2f} MB  {f.note}".rstrip() for f in files]
    lines.append(f"  {'total':<34} {sum(f.size for f in files) / 1e6:>10,.2f} MB")
    return "\n".join(lines)


def find_secrets(notebook: str | os.PathLike, *secrets: Secret | str) -> list[str]:
    """Places in an executed notebook where a token-like string (or one of `secrets`) appears: 'cell N source|output'."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    literal = [s.reveal() if isinstance(s, Secret) else s for s in secrets if s]
    hits = []
    for i, cell in enumerate(nb.get("cells", [])):
        parts = {"source": cell.get("source", ""), "outputs": json.dumps(cell.get("outputs", []), ensure_ascii=False)}
        for where, text in parts.items():
            text = "".join(text) if isinstance(text, list) else text
            if HF_TOKEN_PATTERN.search(text) or any(s in text for s in literal):
                hits.append(f"{Path(notebook).name}: cell {i} {where}")
    meta = json.dumps(nb.get("metadata", {}), ensure_ascii=False)
    if HF_TOKEN_PATTERN.search(meta) or any(s in meta for s in literal):
        hits.append(f"{Path(notebook).name}: metadata")
    return hits
