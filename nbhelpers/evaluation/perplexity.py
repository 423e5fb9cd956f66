"""Perplexity of a causal language model over texts, with a sliding window for texts longer than the context."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..device import local_default
from ..layout import CONFIG_FILE
from ..token_bytes import TokenBytes, bits_per_byte

if TYPE_CHECKING:  # torch and transformers load only when a model is scored
    import torch

# A model may pad its embedding table past the tokenizer (to a multiple of 64 or 128 for the matrix
# units); a larger gap means the model was built for another tokenizer.
VOCAB_SLACK = 128


class ModelMismatch(ValueError):
    """A tokenizer that does not fit the model, or a model directory that is not one."""


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexities of a set of texts (the mean of per-text values and the token-weighted value) and bits per byte."""

    mean_ppl: float  # mean over texts of exp(text nll / text tokens)
    token_ppl: float  # exp(total nll / total tokens): every scored token weighs the same
    per_text: tuple[float, ...]
    tokens: tuple[int, ...]  # scored tokens per text
    nll: tuple[float, ...]  # summed negative log-likelihood per text, in nats
    max_length: int
    stride: int
    bytes: tuple[int, ...] = ()  # UTF-8 bytes of each text's scored part
    bpb: float | None = None  # total nll / ln 2 / total bytes: comparable across tokenizers

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def model_dir_error(path: Path) -> str:
    """Why `path` is not a save_pretrained model directory, or an empty string when it is one."""
    if not path.exists():
        return f"{path}: no such directory"
    if not path.is_dir():
        return f"{path}: not a directory"
    if not (path / CONFIG_FILE).is_file():
        return f"{path}: no config.json (not a save_pretrained model directory)"
    return ""


def check_tokenizer(model: Any, tokenizer: Any, where: str | Path = "") -> None:
    """Raise ModelMismatch when the tokenizer's vocabulary does not fit the model's embedding table."""
    emb = model.get_input_embeddings()
    model_vocab = int(emb.num_embeddings if emb is not None else model.config.vocab_size)
    tok_vocab = len(tokenizer)
    at = f"{where}: " if where else ""
    if tok_vocab > model_vocab:
        raise ModelMismatch(
            f"{at}the tokenizer has {tok_vocab} tokens but the model's embedding table has {model_vocab}: "
            "ids past the table would fail; load the tokenizer the model was trained with"
        )
    if model_vocab - tok_vocab > VOCAB_SLACK:
        raise ModelMismatch(
            f"{at}the tokenizer has {tok_vocab} tokens but the model was built for {model_vocab}: "
            "this tokenizer is not the one the model was trained with"
        )
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None and not 0 <= value < model_vocab:
            raise ModelMismatch(f"{at}tokenizer.{name}={value} is outside the model's vocabulary (0..{model_vocab - 1})")


def load_model(path: str | Path, *, tokenizer_path: str | Path | None = None, device: Any = None,
               dtype: Any = None) -> tuple[Any, Any]:
    """Load a save_pretrained causal LM and its tokenizer, checking that they belong together."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser()
    problem = model_dir_error(path)
    if problem:
        raise FileNotFoundError(f"{problem}; run notebooks/03_pretrain (or 04_instruction_tuning) first")
    tok_path = Path(tokenizer_path).expanduser() if tokenizer_path else path
    if not (tok_path / "tokenizer.json").is_file() and not (tok_path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{tok_path}: no tokenizer.json or tokenizer_config.json; pass tokenizer_path=")
    tokenizer = AutoTokenizer.from_pretrained(tok_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype) if dtype else AutoModelForCausalLM.from_pretrained(path)
    check_tokenizer(model, tokenizer, where=path)
    model.to(device or local_default())
    model.eval()
    return model, tokenizer


def windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, new) windows over `n_tokens`: each scores only its last `new` tokens, unseen before."""
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride={stride}: expected 1 <= stride <= max_length={max_length}")
    out, prev_end = [], 0
    for begin in range(0, max(n_tokens, 1), stride):
        end = min(begin + max_length, n_tokens)
        out.append((begin, end, end - prev_end))
        prev_end = end
        if end >= n_tokens:
            break
    return out


def _xla_sync() -> None:
    """Cut the lazy XLA graph after a batch so every batch runs the same compiled program.

    Only reached with a model already on an XLA device. The adapter's hook (nbhelpers.xla, passed as
    after_batch by the notebook) would switch SPMD on, which must not happen once tensors live on the device.
    """
    from .. import xla  # the adapter is the one place torch_xla is imported

    xla.sync()


def _model_max_length(model: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(model.config, name, None)
        if value:
            return int(value)
    raise ValueError("the model's config has no max_position_embeddings: pass max_length=")


def perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    stride: int | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
    prefix: str = "eos",
    fixed_shapes: bool | None = None,
    after_batch: Callable[[], None] | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of `texts` under `model`, scoring long texts with a strided sliding window.

    Each text is tokenized without special tokens and, with prefix="eos" (the document separator the
    corpus packs between documents) or "bos", preceded by that token so its first token is scored too;
    prefix="none" leaves the first token unscored. A window of `max_length` tokens (default: the model's
    context) moves by `stride` (default: half of it) and scores only the tokens the previous window did not,
    so every token after the first window sees at least max_length - stride tokens of context.
    Windows of all texts are batched (right-padded, masked); sums stay on the device until the end.
    fixed_shapes pads every batch to (batch_size, max_length), the default on XLA so one program compiles;
    after_batch runs after each batch (on XLA, default: torch_xla.sync, one graph per batch).
    Bits per byte divide the summed NLL (in bits) by the UTF-8 bytes of the texts as given (with prefix="none"
    less the unscored first token's), so a model with another tokenizer is scored on the same bytes.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if isinstance(texts, str):
        raise TypeError("texts: expected a list of strings, got one string")
    if not texts:
        raise ValueError("texts: expected at least one text")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    check_tokenizer(model, tokenizer)
    max_length = int(max_length or _model_max_length(model))
    stride = int(stride or max(1, max_length // 2))
    if max_length < 2:
        raise ValueError(f"max_length={max_length}: expected >= 2 (one context token and one scored token)")
    if not 1 <= stride <= max_length - 1:
        raise ValueError(f"stride={stride}: expected 1 <= stride < max_length={max_length}")
    prefix_id = {"eos": getattr(tokenizer, "eos_token_id", None), "bos": getattr(tokenizer, "bos_token_id", None),
                 "none": None}.get(prefix, "bad")
    if prefix_id == "bad":
        raise ValueError(f"prefix={prefix!r}: expected eos | bos | none")
    if prefix != "none" and prefix_id is None:
        raise ValueError(f"prefix={prefix!r}: the tokenizer has no {prefix} token; pass prefix='none'")

    # Windows of every text: (text index, input ids, number of scored tokens at the window's end).
    items: list[tuple[int, list[int], int]] = []
    text_bytes: list[int] = []
    token_bytes = TokenBytes.from_tokenizer(tokenizer) if prefix_id is None else None
    for t, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{t}]: expected a string, got {type(text).__name__}")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        text_bytes.append(len(text.encode("utf-8")) - (token_bytes.text_bytes(ids[:1]) if token_bytes else 0))
        if prefix_id is not None:
            ids = [prefix_id, *ids]
        if len(ids) < 2:
            raise ValueError(f"texts[{t}] gives {len(ids)} token(s) with prefix={prefix!r}: nothing to score")
        for begin, end, new in windows(len(ids), max_length, stride):
            items.append((t, ids[begin:end], min(new, end - begin - 1)))  # a window's first token has no context

    device = next(model.parameters()).device
    fixed = (device.type == "xla") if fixed_shapes is None else fixed_shapes
    if device.type == "xla":
        from .. import xla

        xla.use_xla_attention(model)  # SDPA would read the mask on the host every batch
        if after_batch is None:
            after_batch = _xla_sync
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (prefix_id or 0)
    order = sorted(range(len(items)), key=lambda i: -len(items[i][1]))  # similar lengths share a batch
    was_training = model.training
    model.eval()
    sums: list[torch.Tensor] = []  # per batch: (B,) summed NLL of each row, on the device
    batch_rows: list[int] = []  # real (non-padding) rows of each batch
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), desc="perplexity", disable=not progress,
                              unit="batch"):
                chunk = [items[i] for i in order[start:start + batch_size]]
                batch_rows.append(len(chunk))
                rows = batch_size if fixed else len(chunk)
                width = max_length if fixed else max(len(ids) for _, ids, _ in chunk)
                input_ids = torch.full((rows, width), pad_id, dtype=torch.long)  # (B, T)
                labels = torch.full((rows, width), -100, dtype=torch.long)  # (B, T), -100 = not scored
                mask = torch.zeros((rows, width), dtype=torch.long)  # (B, T)
                for r, (_, ids, new) in enumerate(chunk):
                    n = len(ids)
                    input_ids[r, :n] = torch.tensor(ids)
                    labels[r, n - new:n] = input_ids[r, n - new:n]
                    mask[r, :n] = 1
                if fixed:
                    mask[len(chunk):, 0] = 1  # padding rows attend to one token so softmax stays finite
                input_ids, labels, mask = input_ids.to(device), labels.to(device), mask.to(device)
                logits = model(input_ids=input_ids, attention_mask=mask).logits  # (B, T, V)
                nll = F.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2),  # (B, V, T-1): position p predicts p + 1
                    labels[:, 1:],
                    ignore_index=-100,
                    reduction="none",
                ).sum(dim=1)  # (B,)
                sums.append(nll)  # padding rows are dropped on the host: a slice would change the graph
                if after_batch is not None:
                    after_batch()
        # The one host transfer, at the end. On XLA each batch's sums already exist on the device, so they
        # are copied as they are; a cat there would compile a new graph for every number of batches.
        host = [t.cpu() for t in sums] if device.type == "xla" else list(torch.cat(sums).cpu().split(
            [t.shape[0] for t in sums]))
        per_window = [v for t, n in zip(host, batch_rows) for v in t[:n].double().tolist()]
    finally:
        model.train(was_training)

    nll_text = [0.0] * len(texts)
    tok_text = [0] * len(texts)
    for value, i in zip(per_window, order):
        t, _, new = items[i]
        nll_text[t] += value
        tok_text[t] += new
    per_text = [math.exp(n / k) for n, k in zip(nll_text, tok_text)]
    return PerplexityResult(
        mean_ppl=sum(per_text) / len(per_text),
        token_ppl=math.exp(sum(nll_text) / sum(tok_text)),
        per_text=tuple(per_text),
        tokens=tuple(tok_text),
        nll=tuple(nll_text),
        max_length=max_length,
        stride=stride,
        bytes=tuple(text_bytes),
        bpb=bits_per_byte(sum(nll_text), sum(text_bytes)),
    )
