"""Kaggle kernel folders: kernel-metadata.json checked against the Kaggle CLI's documented fields, and one
folder per notebook (metadata + the notebook with PROFILE injected), chained by kernel_sources so each
notebook reads the earlier notebooks' outputs.

The training notebooks (03, 04) also name themselves in kernel_sources: each saved version then reads the
previous version's output under /kaggle/input and resumes from its newest checkpoint (`rundir`), so the
user only saves a new version. The CLI sends kernel_sources as the kernel's `kernel_data_sources`
(kaggle_api_extended.kernels_push) and reports sources the server refuses as "not valid kernel sources"
without failing the push: on the very first push the kernel does not exist yet, so its own output joins
from the second push on, when there is an output to read.

`kaggle kernels push -p FOLDER` reads kernel-metadata.json (Kaggle CLI docs/kernels_metadata.md): id
('owner/slug', the slug derived from the title), title, code_file, language, kernel_type, is_private,
enable_gpu, enable_tpu, enable_internet, machine_shape, dataset_sources, kernel_sources, ... Since
September 2026 the CLI documents `NvidiaTeslaT4` as "GPU T4 x2" (the default GPU) and `TpuV5E8` as
"TPU v5e-8"; `enable_gpu` without a machine_shape asks for the default GPU (a P100 in older docs, now retired).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .rundir import STAGES, TRAINING_STAGES

# The fields `kaggle kernels push` reads from kernel-metadata.json (Kaggle CLI docs/kernels_metadata.md).
KERNEL_FIELDS = (
    "id", "id_no", "title", "code_file", "language", "kernel_type", "is_private", "enable_gpu", "enable_tpu",
    "enable_internet", "machine_shape", "dataset_sources", "competition_sources", "kernel_sources", "model_sources",
    "keywords", "docker_image", "docker_image_pinning_type",
)
KERNEL_LANGUAGES = ("python", "r", "rmarkdown")
KERNEL_TYPES = ("script", "notebook")
# machine_shape values the CLI documents (Sep 2026); NvidiaTeslaT4 is "GPU T4 x2", the default GPU.
GPU_SHAPES = ("NvidiaTeslaT4", "NvidiaTeslaA100", "NvidiaL4", "NvidiaL4X1", "NvidiaH100", "NvidiaRtxPro6000")
TPU_SHAPES = ("TpuV5E8", "TpuV6E8")
RETIRED_SHAPES = ("NvidiaTeslaP100", "TpuV38", "Tpu1VmV38", "TpuV232", "TpuV2256")  # the server substitutes others
# Profile -> (machine_shape, accelerator) of the notebooks that train; "" = no accelerator.
KAGGLE_PROFILES = {"kaggle_tpu_v5e8": ("TpuV5E8", "tpu"), "kaggle_t4x2": ("NvidiaTeslaT4", "gpu"), "smoke": ("", "cpu")}
CPU_STAGES = ("01", "02")  # tokenizer and corpus need no accelerator: running them on CPU saves the weekly quota
RESUMING = tuple(STAGES[s][0][:2] for s in TRAINING_STAGES)  # 03, 04: read their own previous version's output
PLACEHOLDER_USER = "YOUR_KAGGLE_USERNAME"
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def slugify(title: str) -> str:
    """The kernel slug Kaggle derives from a title: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _bool(meta: Mapping[str, Any], key: str, where: str) -> bool | None:
    if key not in meta:
        return None
    value = meta[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{where}: {key} must be true or false (a JSON boolean or the string), got {value!r}")


def _refs(meta: Mapping[str, Any], key: str, parts: tuple[int, ...], where: str) -> None:
    value = meta.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key} must be a list, got {value!r}")
    for ref in value:
        pieces = ref.split("/") if isinstance(ref, str) else []
        if len(pieces) not in parts or not all(pieces[:2]):
            raise ValueError(f"{where}: {key} entry {ref!r} is not 'owner/slug'")


def validate_kernel_metadata(meta: Mapping[str, Any], folder: str | os.PathLike | None = None,
                             where: str = "kernel-metadata.json") -> None:
    """Raise ValueError naming the field when `meta` is not what `kaggle kernels push` accepts (or means to say)."""
    unknown = sorted(set(meta) - set(KERNEL_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; the CLI reads {', '.join(KERNEL_FIELDS)}")
    if not meta.get("id") and not meta.get("id_no"):
        raise ValueError(f"{where}: id ('owner/kernel-slug') or id_no is required")
    if meta.get("id"):
        pieces = str(meta["id"]).split("/")
        if len(pieces) != 2 or not _OWNER.match(pieces[0]) or not re.fullmatch(r"[a-z0-9-]+", pieces[1]):
            raise ValueError(f"{where}: id must be 'owner/kernel-slug' (lower-case slug, no version), got {meta['id']!r}")
        title = meta.get("title")
        if not isinstance(title, str) or len(title) < 5:
            raise ValueError(f"{where}: title must be a string of at least five characters, got {title!r}")
        if slugify(title) != pieces[1]:
            raise ValueError(f"{where}: title {title!r} gives the slug {slugify(title)!r}, but id says {pieces[1]!r}; "
                             "Kaggle derives the slug from the title, so they must agree")
    code = meta.get("code_file")
    if not code or not isinstance(code, str):
        raise ValueError(f"{where}: code_file (the notebook, relative to the metadata file) is required")
    if folder is not None and not (Path(folder) / code).is_file():
        raise ValueError(f"{where}: code_file {code!r} not found in {folder}")
    if meta.get("language") not in KERNEL_LANGUAGES:
        raise ValueError(f"{where}: language must be one of {', '.join(KERNEL_LANGUAGES)}, got {meta.get('language')!r}")
    if meta.get("kernel_type") not in KERNEL_TYPES:
        raise ValueError(f"{where}: kernel_type must be one of {', '.join(KERNEL_TYPES)}, got {meta.get('kernel_type')!r}")
    if meta["kernel_type"] == "notebook" and not code.endswith(".ipynb"):
        raise ValueError(f"{where}: kernel_type notebook needs an .ipynb code_file, got {code!r}")
    flags = {k: _bool(meta, k, where) for k in ("is_private", "enable_gpu", "enable_tpu", "enable_internet")}
    shape = meta.get("machine_shape", "") or ""
    if shape in RETIRED_SHAPES:
        raise ValueError(f"{where}: machine_shape {shape!r} is retired (Kaggle runs another accelerator instead); "
                         f"use one of {', '.join(GPU_SHAPES + TPU_SHAPES)}")
    if shape and shape not in GPU_SHAPES + TPU_SHAPES:
        raise ValueError(f"{where}: machine_shape must be one of {', '.join(GPU_SHAPES + TPU_SHAPES)} or empty, got {shape!r}")
    if flags["enable_gpu"] and flags["enable_tpu"]:
        raise ValueError(f"{where}: enable_gpu and enable_tpu are both true; a session has one accelerator")
    if shape in GPU_SHAPES and (not flags["enable_gpu"] or flags["enable_tpu"]):
        raise ValueError(f"{where}: machine_shape {shape} is a GPU: set enable_gpu true and enable_tpu false")
    if shape in TPU_SHAPES and (not flags["enable_tpu"] or flags["enable_gpu"]):
        raise ValueError(f"{where}: machine_shape {shape} is a TPU: set enable_tpu true and enable_gpu false")
    if (flags["enable_gpu"] or flags["enable_tpu"]) and not shape:
        raise ValueError(f"{where}: enable_gpu / enable_tpu without machine_shape gets the platform's default "
                         "accelerator (a P100, now retired, for enable_gpu alone); name it: NvidiaTeslaT4 for "
                         "GPU T4 x2, TpuV5E8 for TPU v5e-8")
    if meta.get("language") == "python" and flags["enable_internet"] is False:
        raise ValueError(f"{where}: enable_internet must be true: the setup cell installs nbhelpers with pip")
    for key in ("dataset_sources", "kernel_sources"):
        _refs(meta, key, (2, 3), where)
    _refs(meta, "model_sources", (5,), where)


def kernel_slug(stem: str, prefix: str = "nbhelpers") -> tuple[str, str]:
    """(title, slug) of a notebook's kernel, e.g. ('nbhelpers 03 pretrain', 'nbhelpers-03-pretrain')."""
    title = f"{prefix} {stem.replace('_', ' ')}"
    return title, slugify(title)


def kernel_metadata(stem: str, owner: str, profile: str, earlier: Iterable[str] = (), code_file: str | None = None,
                    base: Mapping[str, Any] | None = None, cpu_stages: Iterable[str] = CPU_STAGES,
                    prefix: str = "nbhelpers") -> dict[str, Any]:
    """kernel-metadata.json of notebook `stem`, reading the outputs of the `earlier` notebooks (kernel_sources).

    A training notebook (03, 04) also reads its own previous version's output, to resume from it.
    """
    if profile not in KAGGLE_PROFILES:
        raise ValueError(f"profile {profile!r} does not run on Kaggle; use one of {', '.join(KAGGLE_PROFILES)}")
    if not _OWNER.match(owner):
        raise ValueError(f"Kaggle user {owner!r}: expected letters, digits, - or _ (your profile URL's last part)")
    shape, accel = KAGGLE_PROFILES[profile]
    if stem[:2] in set(cpu_stages):
        shape, accel = "", "cpu"
    title, slug = kernel_slug(stem, prefix)
    base = dict(base or {})
    meta = {
        "id": f"{owner}/{slug}",
        "title": title,
        "code_file": code_file or f"{stem}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": _bool(base, "is_private", "base") if "is_private" in base else True,
        "enable_gpu": accel == "gpu",
        "enable_tpu": accel == "tpu",
        "enable_internet": True,  # the setup cell installs nbhelpers from the repository
        "machine_shape": shape,
        "dataset_sources": list(base.get("dataset_sources", [])),
        "competition_sources": list(base.get("competition_sources", [])),
        "kernel_sources": [f"{owner}/{kernel_slug(e, prefix)[1]}" for e in earlier]
                          + ([f"{owner}/{slug}"] if stem[:2] in RESUMING else []),
        "model_sources": list(base.get("model_sources", [])),
    }
    validate_kernel_metadata(meta, where=f"{stem} kernel-metadata.json")
    return meta


def write_kaggle_kernels(out_dir: str | os.PathLike, owner: str, profile: str, notebooks_dir: Path | None = None,
                         only: Iterable[str] = (), base: Mapping[str, Any] | None = None,
                         cpu_stages: Iterable[str] = CPU_STAGES) -> list[Path]:
    """One folder per notebook under `out_dir` (kernel-metadata.json + the notebook with PROFILE injected)."""
    import nbformat

    from .notebooks import apply_template, discover, render

    sources = discover(notebooks_dir)
    wanted = {o.strip() for o in only if o.strip()}
    unknown = wanted - {s.stem[:2] for s in sources} - {s.stem for s in sources}
    if unknown:
        raise ValueError(f"--only {','.join(sorted(unknown))}: no such notebook; have {', '.join(s.stem for s in sources)}")
    folders = []
    for i, source in enumerate(sources):
        if wanted and source.stem[:2] not in wanted and source.stem not in wanted:
            continue
        earlier = [s.stem for s in sources[:i]]
        meta = kernel_metadata(source.stem, owner, profile, earlier, base=base, cpu_stages=cpu_stages)
        text = apply_template(source.read_text(encoding="utf-8"), source.stem, where=str(source))
        nb = nbformat.reads(render(source, text), as_version=4)
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        # papermill's convention: a cell tagged injected-parameters right after the parameters cell
        injected = nbformat.v4.new_code_cell(f"# Parameters\nPROFILE = {json.dumps(profile)}\n",
                                             metadata={"tags": ["injected-parameters"]})
        injected.id = "cell-injected-parameters"
        nb.cells.insert(at + 1, injected)
        folder = Path(out_dir) / source.stem
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / meta["code_file"])
        (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        validate_kernel_metadata(meta, folder, where=str(folder / "kernel-metadata.json"))
        folders.append(folder)
    return folders
