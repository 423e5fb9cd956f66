"""The XLA adapter's pieces that need no torch_xla: the missing-torch_xla message, the hook set, FSDP specs."""

from __future__ import annotations

import inspect

import pytest
import torch

from nbhelpers import loop, xla


def test_every_loop_hook_has_an_xla_version():
    wanted = {n for n, f in inspect.getmembers(loop.Hooks, inspect.isfunction) if not n.startswith("_")}
    have = {n for n, f in inspect.getmembers(xla.XlaHooks, inspect.isfunction) if not n.startswith("_")}
    assert wanted <= have, f"XlaHooks lacks {sorted(wanted - have)}"
    for name in wanted:  # same parameters, so the loop can call either
        assert list(inspect.signature(getattr(loop.Hooks, name)).parameters) == \
            list(inspect.signature(getattr(xla.XlaHooks, name)).parameters), name


@pytest.mark.skipif(xla.available(), reason="torch_xla is installed here")
def test_missing_torch_xla_says_what_to_do():
    info = xla.versions()
    assert info["torch_xla"] is None and info["device_count"] == 0
    assert "torch_xla is not installed" in info["error"]
    with pytest.raises(xla.XlaUnavailableError, match="TPU VM v5e-8.*torch_xla==2.8.0"):
        xla.loop_hooks(None)
    with pytest.raises(ImportError, match="train.backend=cpu"):  # an ImportError, for `except ImportError`
        xla.XlaBackend()


@pytest.mark.parametrize(
    "shape, devices, spec",
    [
        ((6114, 1536), 8, (None, "data")),  # seed_1b's MLP: 6114 does not split over 8 chips, 1536 does
        ((32000, 1536), 8, ("data", None)),  # embeddings: the largest dimension that splits evenly
        ((6114,), 8, ("data",)),  # nothing splits evenly: the largest, padded
        ((), 8, ()),  # scalars stay replicated
    ],
)
def test_fsdp_shards_the_largest_dimension_that_splits_evenly(shape, devices, spec):
    assert xla.sharding._fsdp_spec(torch.empty(shape), devices) == spec


def test_cpu_copy_of_cpu_tensors_is_a_detached_view():
    t = torch.ones(3, requires_grad=True)
    out = xla.cpu_state({"a": [t, 1], "b": (t,)})
    assert out["a"][1] == 1 and not out["a"][0].requires_grad and torch.equal(out["b"][0], t.detach())
