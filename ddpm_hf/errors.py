# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Errors as one line: what the CLI prints, and what an error raised on top of a library's error quotes of it."""


def one_line(error) -> str:
    """An error (or any message) as one line: some library errors span several; an empty one is named by its type."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text
