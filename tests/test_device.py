"""Backend and precision selection with the machine's capabilities monkeypatched."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nbhelpers import device
from nbhelpers.config import TrainConfig
from nbhelpers.device import CudaInfo, DeviceError, select

T4 = CudaInfo("Tesla T4", (7, 5), 15_828_320_256, 2)
A100 = CudaInfo("NVIDIA A100-SXM4-40GB", (8, 0), 42_505_273_344, 1)
H100 = CudaInfo("NVIDIA H100 80GB HBM3", (9, 0), 85_520_809_984, 1)


@pytest.fixture
def machine(monkeypatch):
    """Set what the probes see: a CUDA GPU (or None) and whether torch_xla / a TPU are there."""

    def set_machine(cuda=None, xla_installed=False, xla_configured=False, xla_info=("TPU v5 lite", 8, 16 * 10**9)):
        monkeypatch.setattr(device, "cuda_info", lambda index=0: cuda)
        monkeypatch.setattr(device, "xla_installed", lambda: xla_installed)
        monkeypatch.setattr(device, "xla_configured", lambda: xla_configured)
        monkeypatch.setattr(device, "xla_info", lambda: xla_info)
        monkeypatch.delenv("LOCAL_RANK", raising=False)

    return set_machine


def test_t4_gets_fp16_with_a_grad_scaler(machine):
    machine(cuda=T4)
    choice = select(TrainConfig())
    assert (choice.backend, choice.device, choice.precision, choice.use_grad_scaler) == ("cuda", "cuda:0", "fp16", True)
    assert choice.autocast_dtype == torch.float16
    assert "no native bf16" in choice.reason and "7.5" in choice.reason
    assert choice.num_devices == 2 and choice.attn_implementation == "sdpa"


@pytest.mark.parametrize("gpu", [A100, H100])
def test_ampere_and_later_get_bf16_without_scaler(machine, gpu):
    machine(cuda=gpu)
    choice = select(TrainConfig())
    assert (choice.precision, choice.use_grad_scaler) == ("bf16", False)
    assert choice.autocast_dtype == torch.bfloat16
    assert "natively" in choice.reason and gpu.name in choice.reason


def test_cpu_gets_fp32(machine):
    machine(cuda=None)
    choice = select(TrainConfig())
    assert (choice.backend, choice.device, choice.precision, choice.use_grad_scaler) == ("cpu", "cpu", "fp32", False)
    assert choice.autocast_dtype is None
    assert "no TPU or CUDA GPU" in choice.reason
    assert choice.memory_bytes > 0


def test_xla_when_installed_and_configured(machine):
    machine(cuda=T4, xla_installed=True, xla_configured=True)
    choice = select(TrainConfig())
    assert (choice.backend, choice.device, choice.precision, choice.num_devices) == ("xla", "xla", "bf16", 8)
    assert choice.attn_implementation == "eager" and not choice.use_grad_scaler


def test_xla_installed_but_not_configured_is_not_used(machine):
    machine(cuda=None, xla_installed=True, xla_configured=False)
    assert select(TrainConfig()).backend == "cpu"


def test_xla_asked_but_missing_says_how_to_get_it(machine):
    machine(cuda=None, xla_installed=False)
    with pytest.raises(DeviceError, match="train.backend=xla but torch_xla is not installed"):
        select(TrainConfig(backend="xla"))


def test_cuda_asked_without_gpu(machine):
    machine(cuda=None)
    with pytest.raises(DeviceError, match="train.backend=cuda but torch sees no CUDA GPU"):
        select(TrainConfig(backend="cuda"))


def test_bf16_on_a_t4_is_refused(machine):
    machine(cuda=T4)
    with pytest.raises(DeviceError, match=r"train.precision=bf16: the Tesla T4 \(compute capability 7.5\) has no native"):
        select(TrainConfig(precision="bf16"))


def test_explicit_precisions(machine):
    machine(cuda=H100)
    assert select(TrainConfig(precision="fp16")).use_grad_scaler
    assert select(TrainConfig(precision="fp32")).precision == "fp32"
    assert select(TrainConfig(backend="cpu")).backend == "cpu"  # cpu asked on a GPU machine
    machine(cuda=None)
    assert select(TrainConfig(precision="bf16")).precision == "bf16"
    with pytest.raises(DeviceError, match="train.precision=fp16 on the CPU"):
        select(TrainConfig(precision="fp16"))
    machine(cuda=None, xla_installed=True, xla_configured=True)
    assert select(TrainConfig(precision="fp32")).precision == "fp32"
    with pytest.raises(DeviceError, match="fp16 is not supported on XLA"):
        select(TrainConfig(precision="fp16"))


def test_bad_values_name_the_field(machine):
    machine(cuda=None)
    with pytest.raises(DeviceError, match=r"train.backend: expected auto \| cpu \| cuda \| xla, got 'tpu'"):
        select(TrainConfig(backend="tpu"))
    with pytest.raises(DeviceError, match=r"train.precision: expected .*got 'half'"):
        select(TrainConfig(precision="half"))


def test_torchrun_local_rank_picks_the_gpu(machine, monkeypatch):
    machine(cuda=T4)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert select(TrainConfig()).device == "cuda:1"


def test_choice_is_frozen(machine):
    machine(cuda=None)
    choice = select(TrainConfig())
    with pytest.raises(AttributeError):
        choice.precision = "bf16"
    assert choice.summary()["precision"] == "fp32"


def test_import_and_cpu_selection_do_not_load_torch_xla(tmp_path):
    # a torch_xla that fails when imported: the modules may look for it but must not import it
    fake = tmp_path / "torch_xla"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('torch_xla was imported')\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import nbhelpers.device as d, nbhelpers.planner, nbhelpers.model; "
            "from nbhelpers.config import TrainConfig; print(d.xla_installed(), d.select(TrainConfig(backend='cpu')).backend, "
            "'torch_xla' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "cpu", "False"]


def test_real_machine_selection_is_consistent():
    choice = select(TrainConfig())
    if choice.backend == "cuda":
        cap = torch.cuda.get_device_capability()
        assert choice.precision == ("bf16" if cap >= (8, 0) else "fp16")
    elif choice.backend == "cpu":
        assert choice.precision == "fp32"


def test_the_matmul_probe_times_both_types_on_this_cpu_and_reads_its_flags(tmp_path, monkeypatch):
    """The probe measures (the median of real timings), so a CPU is never assumed to have bf16 hardware."""
    assert device.matmul_seconds(torch.float32, repeats=3) > 0
    monkeypatch.setattr(device, "_PROBE", [])
    probe = device.cpu_matmul_probe()
    assert probe.dtype == ("bf16" if probe.bf16_s < probe.fp32_s else "fp32")
    assert device.cpu_matmul_probe() is probe  # measured once per process
    assert "GFLOP/s in bf16" in probe.reason
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert device.cpu_flags(str(cpuinfo)) & set(device.CPU_FLAGS_BF16) == {"avx512_bf16"}
    assert device.cpu_flags(str(tmp_path / "absent")) == set()
