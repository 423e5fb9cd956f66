"""The user documentation: README and docs/ link only to what exists, the README stays a short guide, and the
figures docs/TRAINING.md states in prose are the planner's (the tables are checked in test_planner.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)  # no code-block '#'
    heads = [ln.lstrip("#").strip() for ln in text.splitlines() if re.match(r"#{1,6} ", ln)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        rel = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else str(target)
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {rel}")
    assert broken == []


def test_readme_is_a_short_guide_with_the_ci_test_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.split()) <= 1600  # the detail belongs in docs/
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in ("python -m nbhelpers run --profile smoke --run-dir runs/smoke", "python -m pytest -q"):
        assert f"\n{command}\n" in text
    assert "\npython -m pytest -q\n" in ci  # CI runs the README's test command


def test_the_training_doc_states_small_160m_as_the_planner_plans_it(monkeypatch):
    import nbhelpers.device
    from nbhelpers import config
    from nbhelpers.planner import plan_profile

    monkeypatch.setattr(nbhelpers.device, "select", lambda *a, **k: pytest.fail("planned on this machine's device"))
    plan = plan_profile(config.load("colab_t4", ["model.preset=small_160m"]))
    text = " ".join((ROOT / "docs" / "TRAINING.md").read_text(encoding="utf-8").split())
    assert (f"`small_160m` ({plan.parameters / 1e6:.0f}M parameters) on one T4 plans at {plan.hours:,.0f} hours, "
            f"{plan.sessions} sessions of {plan.session_minutes / 60:g} hours") in text
    assert plan.sessions > 1  # the sentence says it does not finish in one session


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_of_the_package_a_page_names_exists(page):
    """A page that names `nbhelpers/x.py` after x.py moved would send a reader to nothing."""
    named = set(re.findall(r"`(nbhelpers/[\w/]+(?:\.py)?)`", page.read_text(encoding="utf-8")))
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


def test_the_quotas_and_session_lengths_the_pages_state_are_the_codes():
    """The weekly quotas (quota.WEEKLY_QUOTA_HOURS) and session limits (platform's SESSION_LIMIT_MINUTES) as the
    README and PLATFORMS.md state them, so a quota that changes is changed once, in the code, and here."""
    from nbhelpers.platform import SESSION_LIMIT_MINUTES, SESSION_MARGIN_MINUTES
    from nbhelpers.quota import WEEKLY_QUOTA_HOURS

    def h(value: float) -> str:
        return f"{value:g}"

    tpu, gpu = WEEKLY_QUOTA_HOURS[("kaggle", "tpu")], WEEKLY_QUOTA_HOURS[("kaggle", "gpu")]
    tpu_session, gpu_session = SESSION_LIMIT_MINUTES[("kaggle", "tpu")] / 60, SESSION_LIMIT_MINUTES[("kaggle", "gpu")] / 60
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"Kaggle's quota is {h(tpu)} TPU hours and {h(gpu)} GPU hours a week" in readme
    assert f"one {h(WEEKLY_QUOTA_HOURS[('colab', 'gpu')] / 7)}-hour session a day" in readme
    platforms = " ".join((ROOT / "docs" / "PLATFORMS.md").read_text(encoding="utf-8").split())
    assert (f"Kaggle gives about {h(tpu)} TPU hours a week (a session lasts at most {h(tpu_session)} hours) and "
            f"{h(gpu)} GPU hours a week (a T4 x2 session lasts at most {h(gpu_session)} hours). Each session trains "
            f"for its length less a {h(SESSION_MARGIN_MINUTES)}-minute margin") in platforms
