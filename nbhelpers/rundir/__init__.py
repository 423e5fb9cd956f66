"""The run directory: where each stage reads the previous stage's artifacts and writes its own.

Also where a run directory is when RUN_DIR is empty (the platform's default), and how, on Kaggle, the
outputs of earlier notebooks and of earlier versions of this one (attached as inputs, read-only under
/kaggle/input) join this version's run directory in /kaggle/working:

- a stage another notebook finished (its files and metrics.json entry) is linked as a whole folder;
- a training stage (03, 04) that an earlier version of its notebook stopped by the time budget is
  resumed: the input's complete checkpoints are linked one by one into this run's `checkpoints/`
  (read in place, never copied: a `seed_1b` checkpoint is 9.3 GB of the 20 GB output) and its
  `metrics.jsonl` is copied (small), so the loop finds the newest checkpoint where it always looks and
  carries the metrics history on. New checkpoints are written here; the links are removed once a newer
  checkpoint of this version exists, so the version's output holds only its own.

How a version's output becomes the next version's input (Kaggle's docs: notebook outputs can be added
as a notebook's data sources; the Kaggle CLI's `kernels push` sends `kernel_sources` as the kernel's
`kernel_data_sources`): the generated kernel metadata of 03 and 04 names the kernel itself among its
`kernel_sources`, so each saved version reads the previous version's output. Outputs are found at any
depth up to INPUT_DEPTH under /kaggle/input, which covers the layout of 2025 onwards
(/kaggle/input/notebooks/OWNER/SLUG/..., /kaggle/input/datasets/OWNER/SLUG/...) and the older
/kaggle/input/SLUG/...: a Kaggle dataset made from an output works the same way.

Modules: `run` (the RunDir object), `stages` (the stage table and errors), `location` (where it is), `inputs`
(Kaggle's inputs), `resume` (an earlier version's checkpoints, stale inputs), `sessions` (sessions.jsonl),
`config_file` (config.json and its sha256), `lock` (run.lock), `xla_cache` (the compiled programs carried over).
"""

from __future__ import annotations

from ..layout import CONFIG_FILE as CONFIG_FILE  # chat and tests read these names here
from ..layout import CONFIG_SUM as CONFIG_SUM
from ..layout import SESSIONS_FILE as SESSIONS_FILE
from ..layout import STOP_FILE as STOP_FILE
from .inputs import INPUT_DEPTH as INPUT_DEPTH
from .inputs import input_runs as input_runs
from .inputs import is_run as is_run
from .inputs import link_inputs as link_inputs
from .inputs import walk_dirs as walk_dirs
from .location import default_run_dir as default_run_dir
from .location import resolve_run_dir as resolve_run_dir
from .lock import LOCK_BEAT_S as LOCK_BEAT_S
from .lock import LOCK_FILE as LOCK_FILE
from .lock import LOCK_STALE_S as LOCK_STALE_S
from .resume import check_resume as check_resume
from .resume import link_checkpoints as link_checkpoints
from .run import RunDir as RunDir
from .sessions import begin_session as begin_session
from .sessions import end_session as end_session
from .sessions import newest_step as newest_step
from .sessions import read_sessions as read_sessions
from .stages import IDENTITY as IDENTITY
from .stages import STAGES as STAGES
from .stages import TRAINING_STAGES as TRAINING_STAGES
from .stages import RunDirBusy as RunDirBusy
from .stages import RunDirError as RunDirError
from .stages import StageMissing as StageMissing
from .stages import StaleResume as StaleResume
from .stages import config_diff as config_diff
from .stages import continue_hint as continue_hint
from .xla_cache import carry_xla_cache as carry_xla_cache
