"""Platform detection, session limits, the setup cell and its badges."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import nbhelpers
from nbhelpers import config, notebooks, platform
from nbhelpers.platform import Platform

# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(("env", "name"), [
    ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, "kaggle"),
    ({"KAGGLE_URL_BASE": "https://www.kaggle.com"}, "kaggle"),
    ({"COLAB_RELEASE_TAG": "release-colab_20261101"}, "colab"),
    ({"COLAB_BACKEND_VERSION": "next"}, "colab"),
    ({"HOME": "/home/me"}, "local"),
])
def test_detect_platform_from_environment(tmp_path, env, name):
    plat = platform.detect(env, root=tmp_path)
    assert plat.name == name
    assert plat.accelerator == "cpu"


def test_detect_kaggle_from_paths(tmp_path):
    (tmp_path / "kaggle" / "working").mkdir(parents=True)
    assert platform.detect({}, root=tmp_path).name == "local"  # working alone is not enough
    (tmp_path / "kaggle" / "input").mkdir()
    plat = platform.detect({}, root=tmp_path)
    assert plat.name == "kaggle" and "/kaggle/working" in plat.reason


@pytest.mark.parametrize(("env", "device", "accelerator"), [
    ({"TPU_ACCELERATOR_TYPE": "v5litepod-8"}, None, "tpu"),
    ({"PJRT_DEVICE": "TPU"}, None, "tpu"),
    ({"PJRT_DEVICE": "CPU"}, None, "cpu"),  # the CPU PJRT device of the xla tests is not a TPU
    ({}, "vfio/0", "tpu"),
    ({}, "accel0", "tpu"),
    ({}, "nvidia0", "gpu"),
    ({"COLAB_GPU": "1"}, None, "gpu"),
    ({"COLAB_GPU": "0"}, None, "cpu"),
])
def test_detect_accelerator(tmp_path, env, device, accelerator):
    if device:
        path = tmp_path / "dev" / device
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    assert platform.detect({"KAGGLE_KERNEL_RUN_TYPE": "Batch", **env}, root=tmp_path).accelerator == accelerator


def test_session_limits_per_platform():
    assert Platform("kaggle", "tpu", "").session_limit_minutes == 9 * 60
    assert Platform("kaggle", "gpu", "").session_limit_minutes == 12 * 60
    assert Platform("colab", "gpu", "").session_limit_minutes == 12 * 60
    assert Platform("local", "gpu", "").session_limit_minutes is None
    assert Platform("kaggle", "cpu", "").output_limit_bytes == 20 * 10**9
    assert Platform("colab", "gpu", "").output_limit_bytes is None


# ---------------------------------------------------------------- session limits


def test_default_max_minutes_is_limit_less_margin_and_elapsed():
    tpu, gpu = Platform("kaggle", "tpu", ""), Platform("kaggle", "gpu", "")
    assert platform.default_max_minutes(tpu, elapsed_minutes=10) == 9 * 60 - 30 - 10
    assert platform.default_max_minutes(gpu, elapsed_minutes=0) == 12 * 60 - 30
    assert platform.default_max_minutes(Platform("colab", "gpu", ""), elapsed_minutes=60) == 12 * 60 - 30 - 60
    assert platform.default_max_minutes(Platform("local", "cpu", ""), elapsed_minutes=0) == 0.0
    # late in a session the loop still gets a small budget: 0 would mean "no limit"
    assert platform.default_max_minutes(tpu, elapsed_minutes=600) == platform.MIN_BUDGET_MINUTES


def test_apply_session_limit_only_when_unset():
    tpu = Platform("kaggle", "tpu", "")
    train = config.load("smoke").train
    assert platform.apply_session_limit(train, tpu, elapsed_minutes=0).max_minutes == 510
    explicit = config.load("smoke", ["train.max_minutes=42"]).train
    assert platform.apply_session_limit(explicit, tpu, elapsed_minutes=0).max_minutes == 42
    assert platform.apply_session_limit(train, Platform("local", "cpu", "")) is train


def test_session_elapsed_from_proc(tmp_path):
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/uptime").write_text("7200.00 100.00\n")
    fields = ["S"] + ["0"] * 18 + [str(600 * ticks)] + ["0"] * 10  # field 22 (start time) is the 20th after ")"
    (tmp_path / "proc/1/stat").write_text("1 (tini) " + " ".join(fields) + "\n")
    assert platform.session_elapsed_minutes(tmp_path) == pytest.approx((7200 - 600) / 60)
    assert platform.session_elapsed_minutes(tmp_path / "nowhere") == 0.0


def _fake_proc(root, uptime_s: float, starts_s: dict) -> None:
    """DIR/proc with an uptime and, per pid, a stat whose field 22 is its start (seconds after boot, in ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/uptime").write_text(f"{uptime_s:.2f} 100.00\n")
    for pid, start in starts_s.items():
        (root / "proc" / str(pid)).mkdir(exist_ok=True)
        fields = ["S"] + ["0"] * 18 + [str(int(start * ticks))] + ["0"] * 10
        (root / "proc" / str(pid) / "stat").write_text(f"{pid} (proc name) " + " ".join(fields) + "\n")


def test_session_clock_skips_a_pid_1_older_than_the_session_limit(tmp_path, capsys):
    """A TPU VM's PID 1 may predate the session: its age would give every version the 5-minute minimum."""
    tpu = Platform("kaggle", "tpu", "", tmp_path)
    # PID 1 started 3 days ago, the notebook server (the kernel's parent) 20 minutes ago, the kernel 10
    _fake_proc(tmp_path, 3 * 86400, {1: 0, os.getppid(): 3 * 86400 - 1200, os.getpid(): 3 * 86400 - 600})
    clock = platform.session_clock(tmp_path, tpu.session_limit_minutes)
    assert clock.elapsed_minutes == pytest.approx(20) and "parent process" in clock.source
    assert platform.default_max_minutes(tpu) == pytest.approx(9 * 60 - 30 - 20, abs=0.1)
    budget = platform.apply_session_limit(config.load("smoke").train, tpu).max_minutes
    assert budget == pytest.approx(9 * 60 - 30 - 20, abs=0.1)
    assert "clock: 20.0 min since the kernel's parent process" in capsys.readouterr().out
    # a fresh container (Kaggle GPU, Colab): PID 1 is the session's start, as before
    _fake_proc(tmp_path, 3600, {1: 600, os.getppid(): 700, os.getpid(): 800})
    clock = platform.session_clock(tmp_path, tpu.session_limit_minutes)
    assert clock.source == "PID 1 (the container)" and clock.elapsed_minutes == pytest.approx(50)
    # both PID 1 and the parent older than the limit: the kernel's own start
    _fake_proc(tmp_path, 3 * 86400, {1: 0, os.getppid(): 0, os.getpid(): 3 * 86400 - 300})
    assert platform.session_clock(tmp_path, 540).elapsed_minutes == pytest.approx(5)
    assert platform.session_clock(tmp_path / "nowhere", 540).source == "none"


# ---------------------------------------------------------------- torch / torch_xla and setup


def test_torch_xla_pair():
    assert platform.check_torch_xla("2.9.0", "2.9.0") is None
    assert platform.check_torch_xla("2.9.1+cpu", "2.9.0") is None
    problem = platform.check_torch_xla("2.10.0+cu128", "2.9.0")
    assert "torch 2.10.0+cu128 with torch_xla 2.9.0" in problem and "needs torch 2.9.x" in problem


def test_setup_stops_on_a_broken_tpu_image(monkeypatch, capsys):
    versions = {"torch": "2.10.0", "torch_xla": "2.9.0"}
    monkeypatch.setattr(platform.torch_pair, "_version", versions.get)
    with pytest.raises(platform.PlatformError, match="Factory reset"):
        platform.setup(Platform("kaggle", "tpu", "test"))
    platform.setup(Platform("local", "cpu", "test"))  # off a TPU: a warning, not an error
    assert "warning: torch 2.10.0 with torch_xla 2.9.0" in capsys.readouterr().out
    versions["torch"] = "2.9.0"
    plat = platform.setup(Platform("kaggle", "tpu", "test"))
    assert plat.name == "kaggle"
    assert "platform: kaggle (tpu" in capsys.readouterr().out


# ---------------------------------------------------------------- badges and the setup cell


SOURCE = '''# %% [markdown]
# # 01 · Thing
#
# Does a thing.

# %%
import nbhelpers

# %% tags=["parameters"]
PROFILE = "smoke"  # smoke
RUN_DIR = ""  # empty = the platform default
OVERRIDES = []  # none

# %%
print(PROFILE)
'''


@pytest.fixture
def fork(monkeypatch):
    monkeypatch.setattr(nbhelpers, "REPO_URL", "https://github.com/someone/nbh-fork")
    monkeypatch.setattr(nbhelpers, "REPO_REF", "v0.2")


def test_badges_come_from_the_one_setting(fork):
    colab, kaggle = notebooks.badge_lines("03_pretrain")
    assert "(https://colab.research.google.com/github/someone/nbh-fork/blob/v0.2/notebooks/03_pretrain.ipynb)" in colab
    assert "(https://kaggle.com/kernels/welcome?src=https://github.com/someone/nbh-fork/blob/v0.2/notebooks/" \
           "03_pretrain.ipynb)" in kaggle
    cell = notebooks.setup_cell()
    assert 'REPO_URL = "https://github.com/someone/nbh-fork"' in cell and 'REPO_REF = "v0.2"' in cell
    assert 'f"nbhelpers @ git+{REPO_URL}@{REPO_REF}"' in cell


def test_repo_url_must_be_github():
    with pytest.raises(ValueError, match="REPO_URL"):
        notebooks.repo("https://gitlab.com/a/b")
    with pytest.raises(ValueError, match="REPO_REF"):
        notebooks.repo("https://github.com/a/b", "bad ref")
    assert notebooks.repo("https://github.com/a/b.git/", "main")[:3] == ("https://github.com/a/b", "a", "b")


def test_template_writes_badges_and_setup_cell_once(fork):
    out = notebooks.apply_template(SOURCE, "01_thing")
    assert out.count("Open in Colab") == 1 and out.count("Open in Kaggle") == 1
    assert "nbhelpers.platform.setup()" in out and out.count("# %%") == SOURCE.count("# %%")
    assert notebooks.apply_template(out, "01_thing") == out  # idempotent
    nb = notebooks.to_notebook(None, out)
    assert nb.cells[1].source == notebooks.setup_cell().rstrip("\n")
    assert "parameters" in nb.cells[2].metadata["tags"]


def test_template_inserts_a_missing_setup_cell():
    source = SOURCE.replace("# %%\nimport nbhelpers\n\n", "")
    out = notebooks.apply_template(source, "01_thing")
    assert notebooks.to_notebook(None, out).cells[1].source == notebooks.setup_cell().rstrip("\n")


def test_template_refuses_a_source_without_title_or_parameters():
    with pytest.raises(ValueError, match="markdown title"):
        notebooks.apply_template("# %%\nx = 1\n", "01_x", where="01_x.py")
    with pytest.raises(ValueError, match="exactly one cell tagged parameters"):
        notebooks.apply_template(SOURCE.replace(' tags=["parameters"]', ""), "01_x")


def test_sync_check_fails_when_the_setting_changes(tmp_path, monkeypatch):
    (tmp_path / "01_thing.py").write_text(SOURCE, encoding="utf-8")
    assert notebooks.sync(tmp_path, check=True) == [tmp_path / "01_thing.py", tmp_path / "01_thing.ipynb"]
    notebooks.sync(tmp_path)
    assert notebooks.sync(tmp_path, check=True) == []
    monkeypatch.setattr(nbhelpers, "REPO_URL", "https://github.com/fork/nbhelpers")
    assert tmp_path / "01_thing.py" in notebooks.sync(tmp_path, check=True)
    notebooks.sync(tmp_path)
    text = (tmp_path / "01_thing.py").read_text(encoding="utf-8")
    assert "github.com/fork/nbhelpers" in text and "github.com/nbhelpers/nbhelpers" not in text


def test_repository_notebooks_follow_the_template():
    sources = notebooks.discover()
    assert sources, "no numbered notebooks found"
    stale = [s.name for s in sources if notebooks.apply_template(s.read_text(encoding="utf-8"), s.stem) !=
             s.read_text(encoding="utf-8")]
    assert stale == [], "run `python -m nbhelpers notebooks` and commit the notebooks"


def _wheel(folder, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> None:
    """A minimal pure-Python wheel, so pip's resolution can be watched without a network."""
    import zipfile

    info = f"{name}-{version}.dist-info"
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{meta}",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)


GIT_SOURCE = 'f"nbhelpers @ git+{REPO_URL}@{REPO_REF}"'  # the setup cell's install from the repository
FAKE_PACKAGE = {"nbhelpers/__init__.py": "from . import doctor, hub, platform\n",
                "nbhelpers/platform.py": "def setup():\n    print('setup ran')\n",
                "nbhelpers/hub.py": "def export_hf_token():\n    return 'token ran'\n",
                "nbhelpers/doctor.py": "def short():\n    print('doctor ran')\n"}


def offline_cell(stem: str = "") -> str:
    """The setup cell installing `nbhelpers` from pip's configured wheels instead of the repository."""
    cell = notebooks.setup_cell(stem=stem)
    assert GIT_SOURCE.replace("nbhelpers @", "nbhelpers[eval] @" if stem == "06_eval" else "nbhelpers @") in cell
    return cell.replace(GIT_SOURCE, '"nbhelpers"')


@pytest.mark.slow
def test_setup_cell_says_what_to_do_when_the_release_cannot_be_installed(tmp_path):
    """REPO_REF not served (here: no index at all): the cell names the three ways out; a wheel attached as a
    Kaggle input (a dataset) then installs without the repository."""
    venv, root = tmp_path / "venv", tmp_path / "kg"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", NBHELPERS_PLATFORM_ROOT=str(root))
    cell = notebooks.setup_cell()
    failed = subprocess.run([py, "-c", cell], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert failed.returncode != 0
    ref = nbhelpers.REPO_REF
    for advice in (f"If it could not fetch {nbhelpers.REPO_URL} at {ref}", f"git push origin {ref}",
                   "set REPO_REF above to a branch or commit", "upload a wheel of nbhelpers as a Kaggle dataset",
                   "docs/PLATFORMS.md: Installing from a wheel"):
        assert advice in failed.stderr, failed.stderr[-3000:]
    wheel_dir = root / "kaggle/input/datasets/alice/nbhelpers-wheel"
    wheel_dir.mkdir(parents=True)
    _wheel(wheel_dir, "nbhelpers", "0.1", FAKE_PACKAGE)
    ok = subprocess.run([py, "-c", cell], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ok.returncode == 0 and all(f"{part} ran" in ok.stdout for part in ("setup", "token", "doctor")), \
        ok.stderr[-2000:]


@pytest.mark.slow
def test_setup_cell_installs_missing_dependencies_but_never_replaces_torch(tmp_path):
    """The setup cell's pip constraint, in a fresh venv with a fake 'platform' torch 1.0 and a newer 2.0 on offer."""
    venv, wheels = tmp_path / "venv", tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "torch", "1.0", {"torch/__init__.py": "__version__ = '1.0'\n"})
    _wheel(wheels, "torch", "2.0", {"torch/__init__.py": "__version__ = '2.0'\n"})
    _wheel(wheels, "helperdep", "1.0", {"helperdep/__init__.py": ""})
    package = FAKE_PACKAGE
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([py, "-m", "pip", "install", "-q", "torch==1.0"], env=env, check=True, timeout=300)
    cell = offline_cell()

    def torch_version() -> str:
        return subprocess.run([py, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                              check=True, cwd=tmp_path).stdout.strip()

    # nbhelpers needs helperdep (missing here) and any torch: helperdep comes in, torch stays 1.0
    _wheel(wheels, "nbhelpers", "0.1", package, requires=("torch", "helperdep"))
    ok = subprocess.run([py, "-c", cell], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "setup ran" in ok.stdout and torch_version() == "1.0"
    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "nbhelpers"], env=env, check=True, timeout=300)

    # a release that needs a newer torch: pip stops with a conflict instead of replacing the platform's torch
    (wheels / "nbhelpers-0.1-py3-none-any.whl").unlink()
    _wheel(wheels, "nbhelpers", "0.2", package, requires=("torch>=2",))
    refused = subprocess.run([py, "-c", cell], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert refused.returncode != 0 and "conflicting dependencies" in refused.stderr, refused.stderr[-2000:]
    assert torch_version() == "1.0"
    # without the constraint pip would have upgraded it: the pin is what protects the image
    subprocess.run([py, "-m", "pip", "install", "-q", "nbhelpers"], env=env, check=True, timeout=300)
    assert torch_version() == "2.0"


# ---------------------------------------------------------------- rehearsal root and scratch space


def test_rehearsal_root_moves_the_platform_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("NBHELPERS_PLATFORM_ROOT", str(tmp_path))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    plat = platform.detect()
    assert plat.name == "kaggle" and plat.run_type == "Batch" and plat.root == tmp_path
    assert "rehearsal under" in plat.reason
    assert plat.output_root == tmp_path / "kaggle/working" and plat.inputs == tmp_path / "kaggle/input"
    assert plat.runs_root == tmp_path / "kaggle/working/runs"
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-external_20261120-060000_RC00")
    colab = platform.detect()
    assert colab.name == "colab" and colab.runs_root == tmp_path / "content/drive/MyDrive/nbhelpers/runs"
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    assert platform.detect().name == "local"  # the root alone selects nothing: the platform's variables do


def test_rehearsal_root_must_be_an_absolute_folder(tmp_path):
    with pytest.raises(platform.PlatformError, match="absolute"):
        platform.detect({"NBHELPERS_PLATFORM_ROOT": "relative/dir"})
    (tmp_path / "f").write_text("x")
    with pytest.raises(platform.PlatformError, match="is a file"):
        platform.detect({"NBHELPERS_PLATFORM_ROOT": str(tmp_path / "f")})


def test_scratch_dir_is_local_and_never_kept(tmp_path):
    kaggle = Platform("kaggle", "tpu", "test", tmp_path)
    assert platform.scratch_dir("corpus", kaggle) == tmp_path / "kaggle/temp/nbhelpers/corpus"
    assert (tmp_path / "kaggle/temp/nbhelpers/corpus").is_dir()
    assert not str(platform.scratch_dir("", kaggle)).startswith(str(kaggle.output_root))  # not in the 20 GB output
    colab = Platform("colab", "gpu", "test", tmp_path)
    scratch = platform.scratch_dir("corpus", colab)
    assert scratch == tmp_path / "content/nbhelpers-scratch/corpus"
    assert tmp_path / "content/drive" not in scratch.parents  # never on Drive
    assert platform.scratch_dir("corpus", Platform("local", "cpu", "test", tmp_path)) is None


def test_badges_and_setup_cells_pin_this_release():
    """REPO_REF is the release tag of this version: a notebook and the package its setup cell installs match."""
    assert f"v{nbhelpers.__version__}" == nbhelpers.REPO_REF
    assert f'REPO_REF = "v{nbhelpers.__version__}"' in notebooks.setup_cell()
    for source in notebooks.discover():
        assert f"/blob/v{nbhelpers.__version__}/notebooks/{source.stem}.ipynb" in source.read_text(encoding="utf-8")


# ---------------------------------------------------------------- PROFILE = "auto"


def _devices(root, *names):
    for name in names:
        path = root / "dev" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


@pytest.mark.parametrize(("env", "devices", "profile", "why"), [
    ({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "TPU_ACCELERATOR_TYPE": "v5litepod-8"}, (), "kaggle_tpu_v5e8", "TPU"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, ("nvidia0", "nvidia1", "nvidiactl"), "kaggle_t4x2", "2 GPUs"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, ("nvidia0", "nvidiactl"), "colab_t4", "one CUDA GPU"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, (), "smoke", "no Kaggle TPU"),
    ({"COLAB_RELEASE_TAG": "release-colab_20261101", "COLAB_GPU": "1"}, ("nvidia0",), "colab_t4", "Colab"),
    ({"COLAB_RELEASE_TAG": "release-colab_20261101"}, (), "colab_t4", "no GPU attached"),
    ({}, ("nvidia0",), "colab_t4", "one CUDA GPU"),
    ({}, ("nvidia0", "nvidia1"), "colab_t4", "one CUDA GPU"),  # two local GPUs are not Kaggle's T4 x2
    ({}, (), "smoke", "smoke profile runs on this CPU"),
])
def test_auto_profile_follows_the_platform(tmp_path, env, devices, profile, why):
    _devices(tmp_path, *devices)
    choice = platform.choose_profile("auto", platform.detect(env, root=tmp_path))
    assert choice.profile == profile and why in choice.reason
    assert str(choice).startswith(f"profile: {profile} (auto: ")
    # an explicit profile wins over the platform
    assert platform.choose_profile("smoke", platform.detect(env, root=tmp_path)).profile == "smoke"


def test_gpu_count_reads_only_numbered_device_files(tmp_path):
    _devices(tmp_path, "nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-modeset")
    assert platform.gpu_count(tmp_path) == 2 and platform.gpu_count(tmp_path / "nowhere") == 0


def test_auto_profile_in_a_rehearsal_prints_its_choice(tmp_path, monkeypatch, capsys):
    """NBHELPERS_PLATFORM_ROOT + Kaggle's variables: the rehearsal's dev/nvidia0..1 stand in for Kaggle's T4 x2."""
    monkeypatch.setenv("NBHELPERS_PLATFORM_ROOT", str(tmp_path))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    _devices(tmp_path, "nvidia0", "nvidia1")
    assert platform.resolve_profile("auto") == "kaggle_t4x2"
    out = capsys.readouterr().out
    assert out.startswith("profile: kaggle_t4x2 (auto: Kaggle with 2 GPUs") and "KAGGLE_KERNEL_RUN_TYPE" in out
    monkeypatch.setenv("TPU_NAME", "local")
    assert platform.resolve_profile("auto") == "kaggle_tpu_v5e8"
    assert platform.resolve_profile("colab_t4") == "colab_t4" and capsys.readouterr().out.count("profile:") == 1


def test_every_notebook_defaults_to_the_auto_profile_and_resolves_it():
    for source in notebooks.discover():
        text = source.read_text(encoding="utf-8")
        assert '\nPROFILE = "auto"  # auto' in text, source.name
        resolve = text.index("PROFILE = nbhelpers.platform.resolve_profile(PROFILE)")
        assert resolve < text.index("nbhelpers.config.load(PROFILE, OVERRIDES)"), source.name


def test_auto_profile_names_a_run_of_another_profile_it_would_start_beside(tmp_path, monkeypatch, capsys):
    assert set(platform.PROFILE_NAMES) == set(config.PROFILES)
    monkeypatch.setenv("NBHELPERS_PLATFORM_ROOT", str(tmp_path))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("TPU_NAME", "local")
    runs = tmp_path / "kaggle/working/runs"
    (runs / "kaggle_t4x2").mkdir(parents=True)
    (runs / "kaggle_t4x2" / "config.json").write_text("{}")
    assert platform.resolve_profile("auto") == "kaggle_tpu_v5e8"
    out = capsys.readouterr().out
    assert "holds a run of kaggle_t4x2 and none of kaggle_tpu_v5e8" in out and 'PROFILE = "kaggle_t4x2"' in out
    (runs / "kaggle_tpu_v5e8").mkdir()
    (runs / "kaggle_tpu_v5e8" / "config.json").write_text("{}")
    platform.resolve_profile("auto")
    assert "note:" not in capsys.readouterr().out  # its own run exists: the choice continues it
