"""Muon for the hidden matrices: momentum, a Newton-Schulz orthogonalised update, AdamW's update RMS.

Ours rather than `torch.optim.Muon` (torch >= 2.9) for three reasons a user meets:

- Kaggle's TPU image has torch 2.8, which has no `torch.optim.Muon`; this runs on torch >= 2.4.
- torch's iteration calls `addmm` with alpha and beta, which torch_xla 2.9 runs on the host (a round trip per
  matrix and iteration); on XLA ours writes those sums as plain ops, which XLA compiles into the step.
- A T4 has no bf16 tensor cores: the iteration runs in fp16 there (the run's precision), bf16 elsewhere.

The algorithm and its numbers are the published ones (Jordan et al. 2024; the AdamW-matched scale of Liu et
al. 2025, "Muon is Scalable for LLM Training", arXiv 2502.16982): momentum 0.95 with Nesterov, 5 steps of the
quintic iteration (3.4445, -4.7750, 2.0315), decoupled weight decay, and each update scaled by
0.2 * sqrt(max(rows, cols)) so that AdamW's learning rate and weight decay carry over. Off XLA, a whole
matrix's update equals `torch.optim.Muon`'s bit for bit (`tests/test_muon.py`, where torch has it).

GPT-NeoX fuses q, k and v into one (3H, H) weight whose rows are ordered per head as [q, k, v]. A group with
`qkv_heads` > 0 orthogonalises such a weight as three (H, H) blocks, each with its own scale: q, k and v are
separate maps, and `bench/learning_efficiency.py` measured a lower held-out loss this way (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(update: torch.Tensor, dtype: torch.dtype = torch.bfloat16, steps: int = NS_STEPS,
                  eps: float = 1e-7, fused: bool | None = None) -> torch.Tensor:
    """About U V^T for update = U S V^T, per matrix of a (..., m, n) batch; the matmuls in `dtype`.

    `fused` (default: everywhere but XLA) is `torch.optim.Muon`'s form, bit for bit: everything in `dtype`, each
    sum inside its matmul (addmm with alpha and beta). torch_xla runs those addmm calls on the host, and in bf16 its
    norm and sums lose far more (13-19% from the fp32 result on CPU PJRT, where the fused form is 1-2% off on a
    CPU), so the other form keeps the iterate, the norm and the sums in fp32 and casts only the matmuls' inputs
    (2-3% off on CPU PJRT).
    """
    a, b, c = NS_COEFFICIENTS
    fused = update.device.type != "xla" if fused is None else fused
    # torch's order casts first; fp16 cannot: its range ends near 6e-5, where a small gradient's entries lie
    cast_first = fused and dtype != torch.float16
    x = update.to(dtype) if cast_first else update.float()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT  # (..., small, large): the Gram matrix is the small side's
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= Frobenius norm = 1
    if fused:
        x = x.to(dtype)
    for _ in range(steps):
        if not fused:
            low = x.to(dtype)
            gram = low @ low.mT  # (..., small, small)
            poly = b * gram.float() + c * (gram @ gram).float()
            x = a * x + (poly.to(dtype) @ low).float()
            continue
        gram = x @ x.mT
        if x.dim() == 2:
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        else:
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    x = x.to(dtype)
    return x.mT if tall else x


def update_scale(rows: int, cols: int) -> float:
    """The factor that gives an orthogonalised (rows, cols) update the RMS of an AdamW update."""
    return 0.2 * math.sqrt(max(rows, cols))


def qkv_blocks(update: torch.Tensor, heads: int) -> torch.Tensor:
    """A fused GPT-NeoX QKV matrix (3H, H), rows [q, k, v] per head, as its q, k and v matrices (3, H, H)."""
    rows, cols = update.shape
    per_head = update.view(heads, 3, rows // (3 * heads), cols)  # (heads, q|k|v, head_dim, H)
    return per_head.transpose(0, 1).reshape(3, rows // 3, cols)


def fused_qkv(blocks: torch.Tensor, heads: int) -> torch.Tensor:
    """`qkv_blocks` undone: (3, H, H) back to the fused (3H, H) row order."""
    three, rows, cols = blocks.shape
    return blocks.view(three, heads, rows // heads, cols).transpose(0, 1).reshape(three * rows, cols)


class Muon(torch.optim.Optimizer):
    """Muon on 2-D parameters; state: a `momentum_buffer` per matrix (as `torch.optim.Muon` names it).

    `ns_dtype` is this device's matmul type for the iteration, not a hyperparameter: it is not in the param
    groups, so a checkpoint saved on a T4 (fp16) resumes on a TPU (bf16).
    """

    def __init__(self, params: Any, lr: float, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, qkv_heads: int = 0, ns_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "nesterov": nesterov, "qkv_heads": qkv_heads})
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"Muon updates matrices only; got a parameter of shape {tuple(p.shape)}")
                if group["qkv_heads"] and p.shape[0] % (3 * group["qkv_heads"]):
                    raise ValueError(f"qkv_heads={group['qkv_heads']}: a fused QKV weight has 3 x heads x head_dim "
                                     f"rows; got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every matrix with a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, momentum, heads = group["lr"], group["weight_decay"], group["momentum"], group["qkv_heads"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                if heads:
                    blocks = orthogonalize(qkv_blocks(update, heads), self.ns_dtype)  # (3, H, H)
                    update, scale = fused_qkv(blocks, heads), update_scale(*blocks.shape[1:])
                else:
                    update, scale = orthogonalize(update, self.ns_dtype), update_scale(*p.shape)
                p.mul_(1 - lr * decay)
                p.add_(update.to(p.dtype), alpha=-lr * scale)
        return loss
