"""Chat with a run's model: multi-turn history trimmed to the context, streamed answers, /reset and /exit.

`python -m nbhelpers chat --run-dir D` talks to `D/sft/final` (`--stage pretrain`: the base model, which was never
tuned to answer); 05 runs a scripted conversation through the same `Session`, and `web_chat` serves it with gradio.
Every answer goes through `generate.generate_batch`, the one generation path, so the prompt is the tuning format.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import config as config_mod
from .files import read_json
from .generate import Response, generate_batch, prompt_budget, trimmed_turns
from .layout import CONFIG_FILE, FINAL
from .rundir import STAGES

COMMANDS = "/reset: forget the conversation · /exit: leave (or an end of input)"


class ChatError(RuntimeError):
    """A run directory with no model to talk to: the message says which notebook makes it."""


@dataclass
class Session:
    """One conversation with a model: its history and how it is sampled."""

    model: Any
    tokenizer: Any
    template: str
    prefix: str = "eos"
    max_new_tokens: int = 128
    sampling: dict[str, Any] = field(default_factory=dict)  # do_sample, temperature, top_p, top_k, seed, ...
    system: str = ""  # put before the first user message (see chat_format)
    messages: list[dict[str, str]] = field(default_factory=list)

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = []

    def conversation(self, user: str) -> list[dict[str, str]]:
        """The messages the model is given for the next answer: system, history, then `user`."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, *self.messages, {"role": "user", "content": user}]

    def trimmed(self, user: str) -> int:
        """How many of the oldest exchanges do not fit the context with `user` and room for the answer."""
        budget = prompt_budget(self.model, self.max_new_tokens)
        if budget is None:
            return 0
        return trimmed_turns(self.tokenizer, self.conversation(user), budget, self.template, self.prefix)

    def ask(self, user: str, streamer: Any = None) -> Response:
        """The model's answer to `user` after the history so far; both join the history."""
        dropped = self.trimmed(user)
        if dropped:  # forget them for good: the next turn would have to leave them out again
            self.messages = self.messages[2 * dropped:]
        [answer] = generate_batch(self.model, self.tokenizer, [self.conversation(user)], template=self.template,
                                  prefix=self.prefix, max_new_tokens=self.max_new_tokens, streamer=streamer,
                                  fixed_shapes=False if streamer is not None else None, **self.sampling)
        self.messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer.text}]
        return answer


def model_dir(run_dir: str | Path, stage: str = "sft") -> Path:
    """`run_dir/stage/final`, or ChatError naming the notebook that makes it (and the base model as a fallback)."""
    root = Path(run_dir)
    if not (root / CONFIG_FILE).is_file():
        raise ChatError(f"{root}: no {CONFIG_FILE}, not a run directory; pass the --run-dir the notebooks wrote "
                        "(runs/PROFILE by default)")
    if stage not in ("sft", "pretrain"):
        raise ChatError(f"stage must be sft or pretrain, got {stage!r}")
    final = root / stage / FINAL
    if not (final / CONFIG_FILE).is_file():
        hint = " (or pass --stage pretrain to talk to the base model, which only continues text)" \
            if stage == "sft" and (root / "pretrain" / FINAL / CONFIG_FILE).is_file() else ""
        raise ChatError(f"{final}: no model yet; run notebooks/{STAGES[stage][0]} first{hint}")
    return final


def load(run_dir: str | Path, stage: str = "sft", device: Any = None, **settings: Any) -> Session:
    """A Session with the run's tuned (or, with stage="pretrain", base) model, in the run's tuning format."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = model_dir(run_dir, stage)
    cfg = config_mod.from_dict(read_json(Path(run_dir) / CONFIG_FILE))
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    if device is not None:
        model = model.to(device)
    settings.setdefault("max_new_tokens", cfg.sft.max_new_tokens)
    return Session(model.eval(), tokenizer, cfg.sft.template, cfg.sft.prompt_prefix, **settings)


def scripted(session: Session, turns: Iterable[str], out: TextIO | None = None) -> list[dict[str, Any]]:
    """Answer `turns` one after another in one conversation (a saved Kaggle version cannot type); one row per turn."""
    rows = []
    for i, user in enumerate(turns, 1):
        dropped = session.trimmed(user)
        answer = session.ask(user)
        rows.append({"turn": i, "user": user, "model": answer.text, "ended_with_eos": answer.ended,
                     "forgotten_exchanges": dropped})
        if out is not None:
            print(f"you> {user}\nmodel> {answer.text}", file=out, flush=True)
    return rows


def _typed(prompt: str) -> Iterator[str]:
    """Lines typed at `input()` (a terminal, a notebook, or piped stdin) until the end of input."""
    while True:
        try:
            yield input(prompt)
        except EOFError:
            return


def repl(session: Session, lines: Iterable[str] | None = None, out: TextIO | None = None, stream: bool = True,
         user_prompt: str = "you> ", model_prompt: str = "model> ") -> int:
    """Read user turns from `lines` (default: input()), answer each (streamed), until /exit or the end; returns 0."""
    out = out or sys.stdout
    pending = iter(_typed(user_prompt) if lines is None else lines)
    print(COMMANDS, file=out, flush=True)
    while True:
        if lines is not None:
            print(user_prompt, end="", file=out, flush=True)
        line = next(pending, None)
        if line is None or line.strip() == "/exit":
            print(file=out, flush=True)
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            session.reset()
            print("(conversation reset)", file=out, flush=True)
            continue
        dropped = session.trimmed(text)
        if dropped:
            print(f"(the {dropped} oldest exchange(s) no longer fit the model's context and are forgotten)",
                  file=out, flush=True)
        print(model_prompt, end="", file=out, flush=True)
        streamer = text_streamer(session.tokenizer, out) if stream else None
        answer = session.ask(text, streamer=streamer)
        if streamer is None:
            print(answer.text, file=out, flush=True)
        elif not answer.ended:
            print(f"(stopped at {session.max_new_tokens} tokens)", file=out, flush=True)


def text_streamer(tokenizer: Any, out: TextIO) -> Any:
    """transformers' TextStreamer (the answer only, special tokens left out) writing to `out`."""
    from transformers import TextStreamer

    class OutStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            print(text, end="\n" if stream_end else "", file=out, flush=True)

    return OutStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


WEB_REQUIREMENT = "gradio>=5"  # the `web` extra of pyproject.toml


def require_gradio(install: bool = True) -> Any:
    """The gradio module, pip-installed on first use when absent and `install` (it is large: only the web chat needs it)."""
    try:
        return importlib.import_module("gradio")
    except ImportError:
        if not install:
            raise
    print(f"installing {WEB_REQUIREMENT} for the web chat ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", WEB_REQUIREMENT], check=True)
    importlib.invalidate_caches()
    return importlib.import_module("gradio")


def _text(content: Any) -> str:
    """A chat message's text: gradio gives a str, or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list | tuple):
        return "".join(_text(part) for part in content)
    return str(content)


def web_chat(session: Session, share: bool | None = None, title: str = "nbhelpers chat", install: bool = True,
             **launch: Any) -> Any:
    """Serve the session as a gradio chat page (answers streamed); returns the launched gradio app.

    share: a public *.gradio.live link; default on Kaggle and Colab, whose notebooks cannot be reached otherwise.
    `launch` goes to gradio's launch (server_port, prevent_thread_lock, ...). Each message carries the page's
    history, which replaces the session's, so the page and the model always see the same conversation.
    """
    from transformers import TextIteratorStreamer

    from . import platform

    gr = require_gradio(install)
    lock = threading.Lock()  # one answer at a time: the session's history is shared

    def respond(message: Any, history: list[dict[str, Any]]) -> Iterator[str]:
        with lock:
            session.messages = [{"role": m["role"], "content": _text(m["content"])} for m in history
                                if m.get("role") in ("user", "assistant")]
            dropped = session.trimmed(_text(message))
            if dropped:
                gr.Info(f"the {dropped} oldest exchange(s) no longer fit the model's context and are left out")
            streamer = TextIteratorStreamer(session.tokenizer, skip_prompt=True, skip_special_tokens=True)
            worker = threading.Thread(target=session.ask, args=(_text(message), streamer), daemon=True)
            worker.start()
            text = ""
            for piece in streamer:
                text += piece
                yield text
            worker.join()

    demo = gr.ChatInterface(respond, title=title, flagging_mode="never")
    if share is None:
        share = platform.detect().name in ("kaggle", "colab")
    demo.launch(share=share, **launch)
    return demo
