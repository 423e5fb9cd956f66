"""`python -m nbhelpers doctor` under the rehearsal root: what it finds, its verdicts and advice, no token shown."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from nbhelpers import doctor, platform

FAKE_TOKEN = "hf_doctorTestToken0123456789abcdef"


@pytest.fixture
def hub_server():
    """A local stand-in for the hub's API (HF_ENDPOINT): 200 for any GET."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server hook's name
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _kaggle_rehearsal(tmp_path):
    """A Kaggle TPU session's root: an earlier version's output of 03 (steps 1 and 2, two sessions) as an input."""
    root = tmp_path / "kg"
    (root / "kaggle/working").mkdir(parents=True)
    run = root / "kaggle/input/notebooks/alice/nbhelpers-03-pretrain/runs/smoke"
    for step in (1, 2):
        (run / f"pretrain/checkpoints/step_{step:08d}").mkdir(parents=True)
        (run / f"pretrain/checkpoints/step_{step:08d}/state.json").write_text(json.dumps({"step": step}))
    (run / "pretrain/checkpoints/step_00000003").mkdir()  # torn: no state.json, not a step to resume from
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text(json.dumps({"tokenizer": {}, "corpus": {}}))
    (run / "pretrain/sessions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in ({"session": 1, "start_step": 0}, {"session": 1, "end_step": 1},
                                                {"session": 2, "start_step": 1}, {"session": 2, "end_step": 2})))
    return root


def test_doctor_reports_a_kaggle_tpu_session_under_the_rehearsal_root(tmp_path, monkeypatch, hub_server):
    root = _kaggle_rehearsal(tmp_path)
    for key in [k for k in os.environ if k.startswith(("KAGGLE_", "COLAB_", "TPU_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NBHELPERS_PLATFORM_ROOT", str(root))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    monkeypatch.setenv("HF_ENDPOINT", hub_server)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    text = doctor.report()
    assert FAKE_TOKEN not in text and "hf_" not in text.replace("HF_TOKEN", "")
    lines = text.splitlines()

    def line(name: str) -> str:
        found = [ln for ln in lines if ln[7:19].rstrip() == name]
        assert found, f"no {name} line in:\n{text}"
        return found[0]

    assert line("platform").startswith("[  ok]") and "kaggle (tpu, Kaggle run type Batch)" in line("platform")
    assert "KAGGLE_KERNEL_RUN_TYPE is set (rehearsal under" in line("platform")
    assert "TPU v5litepod-8" in line("accelerator")
    assert "Python 3." in line("python/torch") and "torch " in line("python/torch")
    # no torch_xla here, as on a TPU VM whose image lost it: a fail, with what to do
    assert line("python/torch").startswith("[fail]") and "-> a TPU without torch_xla: use Kaggle's TPU image" in text
    assert "cores" in line("host") and "RAM" in line("host")
    assert "kaggle/temp" in line("scratch") and "GB free" in line("scratch")
    assert "kaggle/working/runs" in line("output") and "of the 20 GB Kaggle keeps" in line("output")
    assert "notebooks/alice/nbhelpers-03-pretrain/runs/smoke" in line("input")
    assert "pretrain step 2 (session 2)" in line("input")  # the torn step 3 is not counted
    assert "of the 9 h limit (clock: " in line("time budget")
    assert line("hub token").startswith("[  ok]") and "set (from environment; value not shown)" in line("hub token")
    assert line("hub").startswith("[  ok]") and f"{hub_server} answered 200" in line("hub")
    assert lines[-1].startswith("doctor: ") and lines[-1].endswith(", 1 fail")


def test_doctor_says_what_to_do_about_an_unreachable_hub_and_a_missing_token(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    plat = platform.Platform("kaggle", "cpu", "test", tmp_path)
    start = time.monotonic()
    found = {f.name: f for f in doctor.findings(plat)}
    assert time.monotonic() - start < doctor.HUB_TIMEOUT_S + 5
    assert found["hub"].verdict == "warn" and "Settings -> Internet" in found["hub"].todo
    assert found["hub token"].verdict == "warn" and "Add-ons -> Secrets: HF_TOKEN" in found["hub token"].todo
    assert found["accelerator"].verdict == "warn" and "Settings -> Accelerator" in found["accelerator"].todo
    assert found["inputs"].verdict == "warn"  # no /kaggle/input in this root


def test_doctor_short_form_prints_a_summary_and_only_what_is_not_ok(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    doctor.short(platform.Platform("local", "cpu", "test", tmp_path))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("doctor: ") and "python -m nbhelpers doctor" in out[0]
    assert not any(ln.startswith("[  ok]") or ln.startswith("[info]") for ln in out)
    assert any("hub token" in ln for ln in out)


def test_doctor_on_the_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "COLAB_", "NBHELPERS_"))}
    proc = subprocess.run([sys.executable, "-m", "nbhelpers", "doctor", "--no-network"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("nbhelpers ") and "[  ok] platform     local" in proc.stdout
    assert "hub " not in proc.stdout.replace("hub token", "")  # --no-network: no reachability line
