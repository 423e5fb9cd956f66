"""The Hugging Face token (Kaggle secrets, Colab userdata or HF_TOKEN, never shown) and uploads to the Hub."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from . import platform as platforms  # `platform` is a parameter name here
from .platform import Platform, PlatformError

HF_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")


class Secret:
    """A secret string whose repr and str never show it; `reveal()` hands it to the one call that needs it."""

    __slots__ = ("_value", "source", "name")

    def __init__(self, value: str, source: str, name: str = "HF_TOKEN") -> None:
        self._value = value
        self.source = source  # kaggle_secrets | colab_userdata | environment
        self.name = name

    def reveal(self) -> str:
        """The secret itself: pass it straight to the library call, never to print or log."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name} from {self.source}, {len(self._value)} characters, value hidden)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self):
        raise TypeError("a Secret is not pickled: it would end up in a file")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def _from_kaggle(name: str) -> str | None:
    try:
        from kaggle_secrets import UserSecretsClient  # only importable on Kaggle
    except ImportError:
        return None
    try:
        return UserSecretsClient().get_secret(name) or None
    except Exception:  # not attached to this notebook (Add-ons -> Secrets), or the service is down
        return None


def _from_colab(name: str) -> str | None:
    try:
        from google.colab import userdata  # only importable on Colab
    except ImportError:
        return None
    try:
        return userdata.get(name) or None
    except Exception:  # absent, or the notebook was not granted access to it (key icon in the sidebar)
        return None


def hf_token(name: str = "HF_TOKEN", platform: Platform | None = None,
             environ: Mapping[str, str] | None = None) -> Secret | None:
    """The Hugging Face token from Kaggle secrets, Colab userdata or the environment, or None."""
    plat = platform or platforms.detect()
    env = os.environ if environ is None else environ
    readers = {"kaggle": [("kaggle_secrets", _from_kaggle)], "colab": [("colab_userdata", _from_colab)]}
    for source, read in readers.get(plat.name, []):
        value = read(name)
        if value:
            return Secret(value.strip(), source, name)
    value = env.get(name, "").strip()
    return Secret(value, "environment", name) if value else None


def export_hf_token(name: str = "HF_TOKEN", platform: Platform | None = None) -> str:
    """Put the platform's Hugging Face token in the environment as HF_TOKEN, for reads too; says where it came from.

    Anonymous hub reads are limited per IP address (500 API calls and 3,000 file downloads per 5 minutes), and
    a notebook host's address is shared: with a token, huggingface_hub, datasets and the corpus reader (and the
    processes they start, which inherit the environment) count against the user's own, higher limits. The
    token itself is never printed; an HF_TOKEN already set is kept.
    """
    if os.environ.get("HF_TOKEN", "").strip():
        return "HF_TOKEN: already set in the environment (kept)"
    token = hf_token(name, platform)
    if token is None:
        return ("HF_TOKEN: none found; hub reads are anonymous (limited per IP address). Add HF_TOKEN in Kaggle "
                "(Add-ons -> Secrets) or Colab (the key icon, with notebook access) for your own limits")
    os.environ["HF_TOKEN"] = token.reveal()
    return f"HF_TOKEN: set from {token.source} (hub reads count against your account's limits)"


def scrub(text: str, *secrets: Secret | None) -> str:
    """`text` with every given secret and anything shaped like a Hugging Face token replaced."""
    for s in secrets:
        if s is not None and s.reveal():
            text = text.replace(s.reveal(), "***")
    return HF_TOKEN_PATTERN.sub("hf_***", text)


def push_to_hub(folder: str | os.PathLike, repo_id: str, token: Secret | None = None, private: bool = True,
                message: str = "Upload from nbhelpers") -> str:
    """Upload a saved model folder (weights, config and tokenizer files) to the Hugging Face Hub; return its URL."""
    folder = Path(folder)
    missing = [f for f in ("config.json", "tokenizer_config.json") if not (folder / f).is_file()]
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("pytorch_model*.bin"))
    if missing or not weights:
        what = ", ".join(missing + ([] if weights else ["*.safetensors"]))
        raise FileNotFoundError(f"{folder}: {what} not found; push a final/ folder written by the loop "
                                "(it holds the model and the tokenizer)")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"repo_id: expected 'user/name', got {repo_id!r}")
    token = token if token is not None else hf_token()
    if token is None:
        raise PlatformError("no Hugging Face token: add HF_TOKEN in Kaggle (Add-ons -> Secrets) or Colab "
                            "(the key icon, with notebook access), or set the HF_TOKEN environment variable")
    from huggingface_hub import HfApi

    api = HfApi(token=token.reveal())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=message,
                          ignore_patterns=["checkpoints/*", ".*"])
    except Exception as err:  # re-raised without anything that could quote the token
        raise PlatformError(f"push_to_hub({repo_id!r}) failed: {scrub(str(err), token)}") from None
    return f"https://huggingface.co/{repo_id}"


def find_secrets(notebook: str | os.PathLike, *secrets: Secret | str) -> list[str]:
    """Places in an executed notebook where a token-like string (or one of `secrets`) appears: 'cell N source|output'."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    literal = [s.reveal() if isinstance(s, Secret) else s for s in secrets if s]
    hits = []
    for i, cell in enumerate(nb.get("cells", [])):
        parts = {"source": cell.get("source", ""), "outputs": json.dumps(cell.get("outputs", []), ensure_ascii=False)}
        for where, text in parts.items():
            text = "".join(text) if isinstance(text, list) else text
            if HF_TOKEN_PATTERN.search(text) or any(s in text for s in literal):
                hits.append(f"{Path(notebook).name}: cell {i} {where}")
    meta = json.dumps(nb.get("metadata", {}), ensure_ascii=False)
    if HF_TOKEN_PATTERN.search(meta) or any(s in meta for s in literal):
        hits.append(f"{Path(notebook).name}: metadata")
    return hits


