# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Keeping the Hub token out of everything a push writes: log lines, the model card, every uploaded file.

The token is resolved by huggingface_hub (explicit `token=` > `HF_TOKEN` > the login cache) and only ever sent as an
HTTP header. A value counts as a secret when it is the token (or another given secret), when its key names a secret
(token, password, ...), or when it has the shape of a Hugging Face token.
"""

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from huggingface_hub.utils import get_token

# Keys whose values are secrets (or could be): never rendered.
_SECRET_KEY = re.compile(r"token|secret|passw|api[_-]?key|credential|authorization|cookie", re.IGNORECASE)
# The shape of Hugging Face access tokens.
TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{30,}")


def secrets_to_hide(extra: Iterable[str | None] = ()) -> list[str]:
    """The token strings that must never be written anywhere (the resolved Hub token, plus any given)."""
    found = set()
    for value in list(extra) + [_resolved_token(None)]:
        if isinstance(value, str) and len(value) >= 8:
            found.add(value)
    return sorted(found)


def _resolved_token(token) -> str | None:
    if isinstance(token, str):
        return token
    if token is False:
        return None
    try:
        return get_token()
    except Exception:  # a broken login cache must not break publishing
        return None


def _is_secret_value(value: Any, secrets: Sequence[str]) -> bool:
    text = value if isinstance(value, str) else repr(value)
    return bool(TOKEN_SHAPE.search(text)) or any(secret in text for secret in secrets)


def scrub_config(config: Mapping[str, Any] | None, secrets: Sequence[str] = ()) -> dict[str, Any]:
    """`config` without the entries that are, or contain, secrets (by key name, by token shape, by value)."""
    clean = {}
    for key, value in (config or {}).items():
        if _SECRET_KEY.search(str(key)) or _is_secret_value(value, secrets):
            continue
        clean[str(key)] = value
    return clean


def scrub_text(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret, and every token-shaped string, blanked out."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return TOKEN_SHAPE.sub("hf_***", text)


_TEXT_SUFFIXES = (".md", ".json", ".py", ".txt", ".yaml", ".yml", ".cfg", ".toml", ".ini", ".csv", ".jsonl")


def assert_no_secret(folder: str, files: Sequence[str], secrets: Sequence[str]) -> None:
    """Refuse to upload a file that contains a secret (any file) or a token-shaped string (text files).

    Tensor data of .safetensors files is not scanned, their JSON header is.
    """
    needles = [s.encode() for s in secrets]
    overlap = max((len(n) for n in needles), default=0)
    for rel in files:
        path = os.path.join(folder, rel)
        text_like = rel.lower().endswith(_TEXT_SUFFIXES)
        with open(path, "rb") as f:
            if rel.endswith(".safetensors"):
                head = f.read(8)
                size = int.from_bytes(head, "little") if len(head) == 8 else 0
                chunks: Iterable[bytes] = [f.read(min(size, 100_000_000))]
                text_like = True
            else:
                chunks = iter(lambda: f.read(1 << 22), b"")
            tail = b""
            for chunk in chunks:
                window = tail + chunk
                if any(n in window for n in needles) or (
                        text_like and TOKEN_SHAPE.search(window.decode("utf-8", "replace"))):
                    raise ValueError(
                        f"Refusing to upload {rel}: it contains a Hugging Face access token. Remove it (and keep "
                        "secrets out of configs and training arguments) before publishing."
                    )
                tail = window[-(max(overlap, 64)):]
