"""Checks a recipe's pretrained source (a local folder or a Hub repo id) before transformers tries it, so that a
missing folder, an unreachable Hub or an offline machine ends in one message naming the recipe key and how to point
it at a local copy, at once, instead of a minute of retries and an OSError traceback."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from urllib.parse import urlparse

from .parser import RecipeError

# What huggingface_hub accepts as a repo id: [namespace/]name, letters, digits, '-', '_', '.', no leading '.' or '-'.
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


def _hint(key: str, value: str) -> str:
    local = os.path.join("weights", value.split("/")[-1])
    return (f"download it where there is internet (`hf download {value} --local-dir {local}`), copy it here and set "
            f"{key}: {local}")


def _endpoint_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, constants.ENDPOINT
    except OSError as err:
        return False, f"{constants.ENDPOINT} ({type(err).__name__}: {err})"


def check_pretrained_source(key: str, value: str | None, what: str = "checkpoint") -> None:
    """Raises RecipeError unless `value` is an existing folder, or a repo id that is in the local cache (offline) or
    whose Hub is reachable. Runs before any weight is read; the loading itself is wrapped by `loading`."""
    if not value:
        return
    if os.path.isdir(value):
        return
    if os.path.exists(value):
        raise RecipeError(f"{key}: {value} is a file; a {what} is a folder (config.json + weights) or a Hub repo id")
    if not _REPO_ID.match(value) or value.startswith(("./", "../", "~")):
        raise RecipeError(f"{key}: folder {value} not found (a {what}: a local folder or a Hub repo id such as "
                          f"org/name)")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(value, "config.json"), str):  # a path: cached (other values: not)
        return
    if constants.HF_HUB_OFFLINE:
        raise RecipeError(f"{key}: {value} is not a local folder and not in the Hub cache, and HF_HUB_OFFLINE is set; "
                          + _hint(key, value))
    ok, where = _endpoint_reachable()
    if not ok:
        raise RecipeError(f"{key}: {value} is not a local folder and the Hub is unreachable: {where}; "
                          + _hint(key, value) + " (set HF_HUB_OFFLINE=1 to skip the network entirely)")


@contextlib.contextmanager
def loading(key: str, value: str | None, what: str = "checkpoint"):
    """Loading from `value` (weights, config or tokenizer): an OSError (missing file, repo not found, network) or a
    ValueError (the models' own "does not hold every weight" refusals, a config that does not parse) becomes one
    RecipeError naming the recipe key."""
    try:
        yield
    except RecipeError:
        raise
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecipeError(f"{key}: loading the {what} {value} failed: {reason}") from err
