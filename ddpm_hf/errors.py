# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Errors as one line: what the CLI and the trainer print, and what an error raised on top of a library's error quotes
of it."""

import argparse


def one_line(error) -> str:
    """An error (or any message) as one line: some library errors span several; an empty one is named by its type."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line gives one line on stderr ("ddpm-hf sample: error: ..."), not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")
