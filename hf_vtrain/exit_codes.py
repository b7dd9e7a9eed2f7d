"""The exit statuses every hf_vtrain command ends with (README, "When things go wrong"), and the wrapper that turns a
user's mistake into one line on stderr and its status instead of a traceback.

A traceback (status 1) is kept for what is not the user's input: an unexpected error is a bug to report, and its
traceback is what the report needs.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

OK = 0
BUG = 1  # an unexpected error: Python's traceback and status 1
BAD_INPUT = 2  # recipe, key, value, path, corpus, weights, prediction or annotation file: one message
NONFINITE_LOSS = 3
PUSH_FAILED = 4
CHECKPOINT_WRITE_FAILED = 5

TABLE = (
    (OK, "success (--validate_data_only: no problem found)"),
    (BUG, "unexpected error: a bug, reported with its traceback"),
    (BAD_INPUT, "bad input: recipe, unknown key, bad value, missing path or weights, corpus problems, malformed "
                "prediction or annotation file"),
    (NONFINITE_LOSS, "NaN/inf loss"),
    (PUSH_FAILED, "the final push never reached the store"),
    (CHECKPOINT_WRITE_FAILED, "writing a checkpoint failed (e.g. disk full)"),
)


def fail(message: str, status: int = BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def run_tool(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None,
             input_errors: tuple[type[BaseException], ...] = (ValueError, OSError)) -> None:
    """Runs the `main(argv)` of a command-line tool that reads files the user names (metrics, scripts): an error of
    its input ends it with one message and BAD_INPUT; `main` returning an int uses it as the status."""
    try:
        status = main(argv)
    except input_errors as err:
        if isinstance(err, OSError) and err.filename is not None:
            fail(f"{err.filename}: {err.strerror or err}")
        fail(str(err))
    sys.exit(status if isinstance(status, int) else OK)
