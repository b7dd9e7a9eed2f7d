"""Features computed once and kept on disk, one mechanism for every task that trains on frozen features (the
weakly supervised anomaly head on FG-CLIP snippet features first).

A cache lives in `root/<fingerprint id>/`: the fingerprint is what the features depend on (the model's config and a
digest of its weight files, the preprocessing settings, the extraction code's version), written beside them as
`fingerprint.json`, so a changed model or preprocessing gives another folder and never mixes old features with new
ones. Each item (a video) is one safetensors file, written to a temporary name and renamed into place: a killed
extraction leaves complete items only, and the next run computes what is missing (`missing`). Several processes
split the items by index (`shard`) and write disjoint files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from typing import Any, Callable, Iterable, Sequence

FINGERPRINT_NAME = "fingerprint.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """blake2b of the whole file (weights change in any byte)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(folder: str) -> dict:
    """What a saved model's outputs depend on: its config.json (as JSON) and the digest of each weight file."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder}: no config.json, not a saved model")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config.pop("transformers_version", None)
    weights = {name: file_digest(os.path.join(folder, name)) for name in sorted(os.listdir(folder))
               if name.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(folder, name))}
    if not weights:
        raise ValueError(f"{folder}: no weight file to fingerprint ({', '.join(WEIGHT_SUFFIXES)})")
    return {"config": config, "weights": weights}


def _safe_name(key: str) -> str:
    """A file name for an item key (video keys may hold slashes: Explosion/Explosion001_x264)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "__", key)
    return name if len(name) <= 150 else name[:100] + "-" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


class FeatureCache:
    def __init__(self, root: str, fingerprint: dict):
        text = json.dumps(fingerprint, sort_keys=True, default=str)
        self.fingerprint = json.loads(text)
        self.id = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        self.folder = os.path.join(root, self.id)
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, FINGERPRINT_NAME)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle)
            if stored != self.fingerprint:  # a hash collision, or an edited folder: never mix
                raise ValueError(f"{self.folder}: its {FINGERPRINT_NAME} is not this cache's fingerprint")
        else:
            from .data.common import write_json_atomic

            write_json_atomic(path, self.fingerprint, indent=1)

    def path(self, key: str) -> str:
        return os.path.join(self.folder, _safe_name(key) + ".safetensors")

    def has(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def save(self, key: str, tensors: dict[str, Any]) -> str:
        from safetensors.torch import save_file

        path = self.path(key)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata={"key": key})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def load(self, key: str) -> dict:
        from safetensors.torch import load_file

        return load_file(self.path(key))

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if not self.has(k)]


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The items process `rank` of `world_size` computes: every world_size-th from its rank."""
    return list(items[rank::world_size])


def extract(cache: FeatureCache, keys: Sequence[str], compute: Callable[[str], dict], rank: int = 0,
            world_size: int = 1, progress: Callable[[int, int], None] | None = None) -> int:
    """`compute(key)` -> tensors for this process's share of `keys` that the cache lacks, each saved as it is done.
    Returns how many were computed (0 when everything was cached: a resumed or repeated extraction)."""
    todo = cache.missing(shard(list(keys), rank, world_size))
    for i, key in enumerate(todo):
        cache.save(key, compute(key))
        if progress is not None:
            progress(i + 1, len(todo))
    return len(todo)
