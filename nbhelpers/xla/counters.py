"""torch_xla's counters: compiles, device-to-host transfers, graph executions and host scalar reads."""

from __future__ import annotations

from dataclasses import dataclass

from .runtime import _xla


def _metric_samples(name: str) -> int:
    _xla()
    import torch_xla.debug.metrics as met

    data = met.metric_data(name)
    return int(data[0]) if data else 0


def _counter(name: str) -> int:
    _xla()
    import torch_xla.debug.metrics as met

    value = met.counter_value(name)
    return int(value) if value else 0


def compile_count() -> int:
    """XLA graph compilations so far in this process (samples of the `CompileTime` metric)."""
    return _metric_samples("CompileTime")


def transfers_from_device() -> int:
    """Device-to-host transfers so far (samples of `TransferFromDeviceTime`): every `.item()`, `.cpu()`, print."""
    return _metric_samples("TransferFromDeviceTime")


def executions() -> int:
    """Graph executions so far (samples of `ExecuteTime`, or `ExecuteReplicatedTime` under SPMD)."""
    return _metric_samples("ExecuteTime") + _metric_samples("ExecuteReplicatedTime")


def host_scalar_reads() -> int:
    """Scalar reads forced by Python (`aten::_local_scalar_dense`: `.item()`, `if tensor:`), a typical hidden sync."""
    return _counter("aten::_local_scalar_dense")


@dataclass(frozen=True)
class Counters:
    """A snapshot of the counters above; subtract two to get what happened in between."""

    compiles: int
    transfers_from_device: int
    executions: int
    scalar_reads: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, int, int, int]:
        return (self.compiles, self.transfers_from_device, self.executions, self.scalar_reads)


def counters() -> Counters:
    """Snapshot of compiles, device-to-host transfers, graph executions and host scalar reads."""
    return Counters(compile_count(), transfers_from_device(), executions(), host_scalar_reads())
