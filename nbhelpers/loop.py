"""The training loop's old home: everything it offered now lives in the `train` package (read its docstring)."""

from __future__ import annotations

from .train import METRICS_FILE as METRICS_FILE
from .train import BadStepsError as BadStepsError
from .train import Hooks as Hooks
from .train import Job as Job
from .train import TrainingError as TrainingError
from .train import TrainResult as TrainResult
from .train import default_hooks as default_hooks
from .train import enable_checkpointing as enable_checkpointing
from .train import flops_per_token as flops_per_token
from .train import read_metrics as read_metrics
from .train import train as train
