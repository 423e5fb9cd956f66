"""The run's config.json: written with a sha256 record (config.json.sha256), so a hand edit is named, never lost."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import RunConfig
from ..files import read_json, write_text_if_changed
from ..layout import CONFIG_FILE, CONFIG_SUM
from .stages import RunDirError, config_diff


def check_profile(root: Path, profile: str) -> None:
    """Refuse a run directory whose config.json records another profile: its artifacts belong to that run."""
    recorded_file = root / CONFIG_FILE
    if not recorded_file.is_file():
        return
    try:
        recorded = read_json(recorded_file).get("profile")
    except (OSError, ValueError, AttributeError) as err:
        raise RunDirError(f"{recorded_file}: cannot read the recorded configuration ({err}); "
                          "fix or delete the file, or use another RUN_DIR") from err
    if recorded and recorded != profile:
        raise RunDirError(
            f"{root} holds a run made with profile {recorded!r} ({recorded_file}), not {profile!r}: set "
            f"PROFILE = \"{recorded}\" (--profile {recorded}) to continue it, or another RUN_DIR for a "
            f"{profile} run; PROFILE = \"auto\" chose {profile!r} for this machine if you did not name it")


def write_config(root: Path, config: RunConfig) -> None:
    """Write config.json (only when it changes) and config.json.sha256, the record of what nbhelpers wrote."""
    text = json.dumps(config.to_dict(), indent=2, ensure_ascii=False)
    write_text_if_changed(root / CONFIG_FILE, text)
    write_text_if_changed(root / CONFIG_SUM, f"{hashlib.sha256(text.encode()).hexdigest()}  {CONFIG_FILE}\n")


def check_config_file(root: Path, config: RunConfig) -> None:
    """RunDirError when config.json was edited by hand (it differs from config.json.sha256) in a way this run's
    settings do not share: the run would overwrite the edit, so it names the keys and what to do instead."""
    path, record = root / CONFIG_FILE, root / CONFIG_SUM
    if not record.is_file():
        return  # a run dir of an earlier nbhelpers: the record comes with the next finished stage
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() == record.read_text(encoding="utf-8").split(" ")[0].strip():
        return
    try:
        differ = config_diff(json.loads(data), config.to_dict())
    except ValueError as err:
        differ = [f"the file is not valid JSON ({err})"]
    if not differ:
        write_config(root, config)  # edited to exactly this run's settings: nothing would be lost
        return
    raise RunDirError(
        f"{path} was edited by hand (it no longer matches {CONFIG_SUM}): {'; '.join(differ)} (there: the file, "
        "here: this run's --profile and --set). The settings come from --profile and --set (a notebook's PROFILE "
        "and OVERRIDES), never from config.json, which the next finished stage overwrites: pass the edit as "
        "--set KEY=VALUE, then delete config.json (it is written again); or delete it to drop the edit")
