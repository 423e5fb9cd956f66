"""Memory and time planner: parameters, FLOPs per token, memory by part, fit verdict, sessions for the token budget.

flops (FLOPs per token, MFU, peak FLOP/s) and memory (bytes by part, reserves, device memory) < targets (each
profile's hardware) < plan (make_plan: one run on one device) < profiles (plan_profile, the --hours shape
choice, the finish table). Every public name is re-exported here: `nbhelpers.planner.X` is the surface.
"""

from .flops import PEAK_FLOPS as PEAK_FLOPS
from .flops import SUSTAINED_FLOPS as SUSTAINED_FLOPS
from .flops import TPU_V5E_NAMES as TPU_V5E_NAMES
from .flops import cpu_peak_flops as cpu_peak_flops
from .flops import flops_per_token as flops_per_token
from .flops import measure_cpu_peak_flops as measure_cpu_peak_flops
from .flops import mfu as mfu
from .flops import peak_flops as peak_flops
from .flops import sustained_flops as sustained_flops
from .memory import CUDA_RESERVE as CUDA_RESERVE
from .memory import DEVICE_MEMORY as DEVICE_MEMORY
from .memory import FRAGMENTATION as FRAGMENTATION
from .memory import NCCL_RESERVE as NCCL_RESERVE
from .memory import OPTIMIZER_BYTES as OPTIMIZER_BYTES
from .memory import PLAN_HEADROOM as PLAN_HEADROOM
from .memory import PRECISION_BYTES as PRECISION_BYTES
from .memory import GiB as GiB
from .memory import MemoryPlan as MemoryPlan
from .memory import activation_bytes_per_token as activation_bytes_per_token
from .memory import activation_parts as activation_parts
from .memory import device_memory as device_memory
from .memory import hidden_matrix_parameters as hidden_matrix_parameters
from .memory import memory_grid as memory_grid
from .memory import memory_plan as memory_plan
from .memory import optimizer_state_bytes as optimizer_state_bytes
from .memory import reserve as reserve
from .memory import usable_memory as usable_memory
from .plan import Plan as Plan
from .plan import batch_per_device as batch_per_device
from .plan import make_plan as make_plan
from .profiles import SEED_OVERRIDES as SEED_OVERRIDES
from .profiles import ShapeChoice as ShapeChoice
from .profiles import choose_shape as choose_shape
from .profiles import finish_table as finish_table
from .profiles import load_profile as load_profile
from .profiles import plan_profile as plan_profile
from .profiles import with_depth as with_depth
from .targets import TARGETS as TARGETS
from .targets import Target as Target
from .targets import target_of as target_of
