"""Secrets from the platform (Kaggle secrets, Colab userdata) or the environment, held so they are never shown."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from . import platform as platforms  # `platform` is a parameter name here
from .platform import Platform

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


def platform_secret(name: str = "HF_TOKEN", platform: Platform | None = None,
             environ: Mapping[str, str] | None = None) -> Secret | None:
    """A secret (by default the Hugging Face token) from Kaggle secrets, Colab userdata or the environment, or None."""
    plat = platform or platforms.detect()
    env = os.environ if environ is None else environ
    readers = {"kaggle": [("kaggle_secrets", _from_kaggle)], "colab": [("colab_userdata", _from_colab)]}
    for source, read in readers.get(plat.name, []):
        value = read(name)
        if value:
            return Secret(value.strip(), source, name)
    value = env.get(name, "").strip()
    return Secret(value, "environment", name) if value else None


def scrub(text: str, *secrets: Secret | None) -> str:
    """`text` with every given secret and anything shaped like a Hugging Face token replaced."""
    for s in secrets:
        if s is not None and s.reveal():
            text = text.replace(s.reveal(), "***")
    return HF_TOKEN_PATTERN.sub("hf_***", text)
