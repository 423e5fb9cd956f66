"""muon.py: the Newton-Schulz update against an SVD and against torch.optim.Muon, the q / k / v blocks, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from nbhelpers import muon


def _matrix(rows: int, cols: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("shape", [(48, 48), (96, 32), (32, 96), (3, 40, 40)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_orthogonalize_maps_each_singular_value_through_the_quintic(shape, dtype):
    """O = U p(S / |G|_F) V^T for G = U S V^T, p the 5-step quintic: the same singular vectors, values near 1."""
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))) * 1e-3  # gradient-sized entries
    o = muon.orthogonalize(g, dtype).float()
    assert o.shape == g.shape and o.dtype == torch.float32
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    x = (s / s.pow(2).sum(-1, keepdim=True).sqrt()).double()
    a, b, c = muon.NS_COEFFICIENTS
    for _ in range(muon.NS_STEPS):  # the iteration on one singular value: a x + b x^3 + c x^5
        x = a * x + b * x**3 + c * x**5
    inner = u.mT @ o @ vh.mT  # o in g's singular bases: diagonal, with p's values
    values = torch.diagonal(inner, dim1=-2, dim2=-1)
    tolerance = {torch.bfloat16: 0.1, torch.float16: 0.02}[dtype]  # 8 and 11 significant bits
    assert (values - x.float()).abs().max() < tolerance, (values - x.float()).abs().max()
    assert (inner - torch.diag_embed(values)).norm() < 0.05 * values.norm()
    big = s > s.amax(-1, keepdim=True) / 10  # what the quintic has lifted: into about [0.7, 1.2], not onto 1
    assert values[big].min() > 0.6 and values.max() < 1.25


@pytest.mark.parametrize("fused", [True, False])
def test_fp16_keeps_a_tiny_gradient(fused):
    """A T4 iterates in fp16, whose normal range ends near 6e-5: entries of 1e-7 (an unscaled gradient's size) are
    normalised in fp32 first, so the result is as close to fp32 as with gradient-sized entries of 1e-3."""
    g = _matrix(256, 64, 0, scale=1e-7)
    exact = muon.orthogonalize(g, torch.float32)
    o = muon.orthogonalize(g, torch.float16, fused=fused).float()
    assert (o - exact).norm() < 0.01 * exact.norm(), (o - exact).norm() / exact.norm()


def test_a_batch_is_orthogonalised_matrix_by_matrix():
    g = _matrix(3 * 24, 24, 0).view(3, 24, 24)
    whole = muon.orthogonalize(g)
    assert all(torch.equal(whole[i], muon.orthogonalize(g[i])) for i in range(3))


def test_qkv_blocks_are_the_q_k_and_v_rows_of_every_head():
    heads, d, hidden = 4, 3, 12
    w = torch.arange(3 * heads * d * hidden, dtype=torch.float32).view(3 * heads * d, hidden)
    blocks = muon.qkv_blocks(w, heads)  # (3, hidden, hidden)
    assert blocks.shape == (3, hidden, hidden)
    for h in range(heads):
        for j in range(3):  # GPT-NeoX's order per head: [q, k, v], head_dim rows each
            assert torch.equal(blocks[j, h * d:(h + 1) * d], w[(3 * h + j) * d:(3 * h + j + 1) * d])
    assert torch.equal(muon.fused_qkv(blocks, heads), w)


needs_torch_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon is in torch >= 2.9")


@needs_torch_muon
@pytest.mark.parametrize("shape", [(64, 64), (128, 32), (32, 128), (3, 40, 40)])
def test_the_iteration_is_torchs_and_the_xla_form_is_within_bf16_of_it(shape):
    from torch.optim._muon import _zeropower_via_newtonschulz

    g = torch.randn(*shape, generator=torch.Generator().manual_seed(7)) * 1e-2
    theirs = torch.stack([_zeropower_via_newtonschulz(m, muon.NS_COEFFICIENTS, muon.NS_STEPS, 1e-7)
                          for m in g.view(-1, *shape[-2:])]).view(shape)
    assert torch.equal(muon.orthogonalize(g), theirs)  # the CPU's form, batched or not
    exact = muon.orthogonalize(g, torch.float32)
    plain = muon.orthogonalize(g, fused=False)  # what runs on XLA: more roundings, the same iteration
    assert (plain.float() - exact).norm() < 0.05 * exact.norm()
    assert (plain.float() - exact).norm() < 3 * (theirs.float() - exact).norm()


@needs_torch_muon
def test_steps_equal_torch_optim_muon_bit_for_bit():
    """Ours (whole matrices) against torch's with its AdamW-matched scale: 5 steps of 3 shapes, the same numbers.
    So the bench's figures taken with torch.optim.Muon hold for this optimizer."""
    params = [torch.nn.Parameter(_matrix(*shape, seed=i, scale=0.05)) for i, shape in
              enumerate([(64, 64), (128, 32), (32, 128)])]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = muon.Muon(params, lr=0.02, weight_decay=0.1, momentum=0.95)
    theirs = torch.optim.Muon(twins, lr=0.02, weight_decay=0.1, momentum=0.95, adjust_lr_fn="match_rms_adamw")
    start = [p.detach().clone() for p in params]
    for step in range(5):
        for i, (p, t) in enumerate(zip(params, twins)):
            p.grad = _matrix(*p.shape, seed=100 * step + i, scale=1e-2)
            t.grad = p.grad.clone()
        ours.step()
        theirs.step()
    for p, t, p0 in zip(params, twins, start):
        assert (t - p0).norm() > 0.05 * p0.norm()  # the steps did move the weights
        assert torch.equal(p, t)
        assert torch.equal(ours.state[p]["momentum_buffer"], theirs.state[t]["momentum_buffer"])


def test_the_update_has_the_rms_of_an_adamw_update_and_the_blocks_their_own_scale():
    """With momentum and decay off, one step moves a weight by lr * 0.2 * sqrt(max(rows, cols)) * O: RMS ~0.2 lr."""
    heads, hidden = 4, 32
    qkv = torch.nn.Parameter(torch.zeros(3 * hidden, hidden))
    dense = torch.nn.Parameter(torch.zeros(hidden, 4 * hidden))
    opt = muon.Muon([{"params": [qkv], "qkv_heads": heads}, {"params": [dense]}], lr=0.01, weight_decay=0.0,
                    momentum=0.0, nesterov=False)
    qkv.grad, dense.grad = _matrix(3 * hidden, hidden, 1), _matrix(hidden, 4 * hidden, 2)
    opt.step()
    for w in (qkv, dense):
        rms = w.detach().pow(2).mean().sqrt().item()
        assert 0.6 * 0.2 * 0.01 < rms < 1.3 * 0.2 * 0.01, rms  # AdamW's update RMS is about 0.2 lr
    blocks = muon.qkv_blocks(qkv.detach(), heads)
    expected = muon.orthogonalize(muon.qkv_blocks(qkv.grad, heads)).float() * (-0.01 * muon.update_scale(32, 32))
    assert torch.allclose(blocks, expected)


def test_weight_decay_is_decoupled_and_scaled_by_the_lr():
    w = torch.nn.Parameter(torch.ones(8, 8))
    opt = muon.Muon([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.zeros(8, 8)  # a zero update: only the decay moves the weight
    before = copy.deepcopy(w.detach())
    opt.step()
    assert torch.allclose(w.detach(), before * (1 - 0.1 * 0.5))


def test_what_muon_cannot_update_is_named():
    with pytest.raises(ValueError, match=r"matrices only; got a parameter of shape \(8,\)"):
        muon.Muon([torch.nn.Parameter(torch.zeros(8))], lr=0.1)
    with pytest.raises(ValueError, match=r"qkv_heads=4: .*3 x heads x head_dim rows; got shape \(30, 10\)"):
        muon.Muon([{"params": [torch.nn.Parameter(torch.zeros(30, 10))], "qkv_heads": 4}], lr=0.1)
