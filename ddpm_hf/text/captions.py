# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The caption text an image is trained with: the captions generated for the embedded digit sets (`digit_caption`),
and a caption as a data set stores it turned into that text (`caption_text`)."""

from typing import Any

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_PHRASINGS = (
    "a handwritten digit {word}",
    "the number {numeral} written by hand",
    "a handwritten {word}",
    "the digit {numeral}",
    "a white handwritten {numeral} on a black background",
    "a scan of the handwritten number {word}",
)


def digit_caption(label: int, variant: int) -> str:
    """A caption naming digit ``label``; ``variant`` picks one of `DIGIT_PHRASINGS` (taken modulo their count)."""
    # bool is an int subclass, but label=True is a bug, not a digit.
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise ValueError(f"label must be a digit 0..9, got {label!r}")
    phrasing = DIGIT_PHRASINGS[variant % len(DIGIT_PHRASINGS)]
    return phrasing.format(word=DIGIT_WORDS[label], numeral=label)


def caption_text(value: Any) -> str:
    """A caption cell of a data set (metadata.jsonl or a `datasets` column) as the text trained on."""
    # Some datasets store several captions per image (e.g. COCO): the first one is used.
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return "" if value is None else str(value)
