"""A stage's final/ folder: the trained model (save_pretrained, safetensors) and its tokenizer, replaced atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..layout import FINAL


def write_final(model: torch.nn.Module, tokenizer: Any, out_dir: Path) -> Path:
    """Write out_dir/final from `model` (its weights copied to the CPU) and `tokenizer` (when given); rank 0 only."""
    final = out_dir / FINAL
    tmp = out_dir / f".tmp-{FINAL}"
    shutil.rmtree(tmp, ignore_errors=True)
    cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = True  # generation after loading wants the KV cache
    model.save_pretrained(tmp, state_dict=cpu_state)
    if use_cache is not None:
        model.config.use_cache = use_cache
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if final.exists():
        old = out_dir / f".old-{FINAL}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.rename(tmp, final)
    return final
