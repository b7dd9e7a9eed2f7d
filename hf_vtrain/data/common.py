"""What the corpus loaders share: the validation report and the error that lists a corpus's problems, path resolution
and video lookup, the glue between per-row sample transforms and `datasets`' batched `set_transform`, epoch-seeded
transforms, and atomic JSON writes."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .video_io import VideoDecodeError, probe_video


@dataclass
class CorpusArguments:
    """Base of every corpus's data-argument dataclass: where the corpus lives (relative paths resolve against
    `data_root`), and the synthetic-corpus switch whose generator takes the `synthetic_<name>` fields as `<name>=`."""

    data_root: Optional[str] = field(
        default=None, metadata={"help": "Base directory; relative paths below resolve against it."}
    )
    synthetic: bool = field(
        default=False, metadata={"help": "Generate the synthetic corpus into data_root when it is missing."}
    )

    def __post_init__(self):
        if self.synthetic and not self.data_root:
            raise ValueError("synthetic: true needs data_root (where the synthetic corpus is written)")

    def resolve(self, path: Optional[str]) -> Optional[str]:
        if path and self.data_root and not os.path.isabs(path):
            return os.path.join(self.data_root, path)
        return path

    # "module:function" of the corpus's synthetic generator, (data_root, **synthetic_kwargs()) -> path
    SYNTHETIC_WRITER = ""

    def ensure_synthetic(self) -> None:
        """With `synthetic: true`, writes the synthetic corpus into data_root unless it is there: what a run, its
        `validate_data_only` and `load_corpus` all do first, so each checks the corpus the run trains on."""
        if not self.synthetic:
            return
        import importlib

        module, _, name = self.SYNTHETIC_WRITER.partition(":")
        getattr(importlib.import_module(module, __package__), name)(self.data_root, **self.synthetic_kwargs())

    def synthetic_kwargs(self) -> dict:
        """The generator's keyword arguments: every `synthetic_<name>` field as `<name>` (lists as tuples)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name.startswith("synthetic_"):
                value = getattr(self, f.name)
                out[f.name[len("synthetic_"):]] = tuple(value) if isinstance(value, list) else value
        return out


def data_arguments_from(cls, source, **overrides):
    """A corpus's data arguments (`cls`, a CorpusArguments dataclass) from an instance, a mapping, or a recipe file
    (its top-level keys that are `cls` fields; the rest of the recipe is not read), with `overrides` on top."""
    if isinstance(source, cls) and not overrides:
        return source
    if isinstance(source, cls):
        values = dataclasses.asdict(source)
    elif isinstance(source, (str, os.PathLike)):
        from ..parser import read_recipe  # the run's reader: its errors name the file (RecipeError)

        values = read_recipe(os.fspath(source))
    else:
        values = dict(source)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:  # a recipe's other keys belong to the model and the Trainer; an override is meant for the corpus
        import difflib

        from ..parser import RecipeError

        close = difflib.get_close_matches(unknown[0], sorted(names), n=1)
        hint = f"; did you mean {close[0]!r}" if close else ""
        raise RecipeError(f"{cls.__name__} has no key {unknown[0]!r}{hint}")
    return cls(**{k: v for k, v in {**values, **overrides}.items() if k in names})


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # frames stored as images (FRED), also predict's frame folders


@dataclass
class ValidationReport:
    """Every problem of a corpus at once (each naming the file and entry), plus notes: facts that are not problems.
    A corpus's report adds its counts and says them in `summary_lines`."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary_lines(self) -> list[str]:
        """The first lines of `format`: what was checked, with counts."""
        return [f"corpus check: {len(self.problems)} problem(s)"]

    def format(self) -> str:
        lines = self.summary_lines()
        lines += [f"  note: {note}" for note in self.notes]
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s):")
            lines += [f"    - {p}" for p in self.problems]
        else:
            lines.append("  no problems")
        return "\n".join(lines)


def is_finite_number(x) -> bool:
    """A JSON number (not a bool) that is finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fingerprint(path: str, block: int = 1 << 16) -> tuple:
    """Size plus a hash of the first and last 64 KiB: equal for copies of one file, cheap for large videos."""
    size = os.path.getsize(path)
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(block))
        if size > block:
            f.seek(max(size - block, block))
            digest.update(f.read(block))
    return size, digest.hexdigest()


def probe_file(path: str, decode_last: bool, threads: int, identity: bool = False) -> dict:
    """What corpus validation learns of one video file: {"num_frames", "fps"} from video_io.probe_video, or {"error":
    why it is missing or undecodable (without the path, which the caller's message names)}. `identity` adds what a
    duplicate-file check needs: the real path, the inode and a content fingerprint."""
    try:
        stat = os.stat(path)
    except OSError:
        return {"error": "video file not found"}
    try:
        info = probe_video(path, decode_last=decode_last, num_threads=threads)
    except VideoDecodeError as err:
        return {"error": str(err).removeprefix(f"{path}: ")}
    out = {"num_frames": info.num_frames, "fps": info.fps}
    if identity:
        out.update(realpath=os.path.realpath(path), inode=(stat.st_dev, stat.st_ino), fingerprint=_fingerprint(path))
    return out


class CorpusError(ValueError):
    """The corpus has problems; the message is the formatted ValidationReport listing all of them."""

    def __init__(self, report):
        super().__init__(report.format())
        self.report = report


class RowTransform(abc.ABC):
    """A `datasets.Dataset.set_transform` callable built from `transform_row(row) -> dict`: `datasets` passes a
    batch as column -> list; each row becomes one sample dict, returned as key -> list."""

    @abc.abstractmethod
    def transform_row(self, row: dict) -> dict:
        """One sample (key -> value) from one row of the dataset table."""

    def __call__(self, batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        samples = [self.transform_row(row) for row in rows]
        return {key: [s[key] for s in samples] for key in samples[0]} if samples else {}


class EpochSeeded:
    """Mixin of transforms whose random draws are seeded by (seed, epoch, sample index). The epoch is kept in shared
    memory, so DataLoader workers, persistent ones included (forked or spawned), read the value the main process set
    last: the Trainer calls the epoch hooks (on_epoch_begin) before it asks the DataLoader for the epoch's first batch,
    which is when the workers start drawing samples. Call `EpochSeeded.__init__(self)` in the transform's __init__."""

    def __init__(self):
        self._shared_epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._shared_epoch)

    def set_epoch(self, epoch: int) -> None:
        self._shared_epoch.fill_(int(epoch))


def set_dataset_epoch(dataset, epoch: int) -> None:
    """Sets the epoch of the window transform attached to `dataset` (with set_transform); DataLoader workers see it
    through shared memory (EpochSeeded), also persistent ones."""
    transform = (dataset.format.get("format_kwargs") or {}).get("transform")
    if hasattr(transform, "set_epoch"):
        transform.set_epoch(epoch)


class VideoLocator:
    """Finds a video that a list or record names, however its path is rooted: under `video_dir`, under `data_root`,
    as given (absolute, or relative to the working directory), then by its file name anywhere under `video_dir` (or
    `data_root`). The last step is for corpora whose file names are unique (UCF-Crime's are) and whose records were
    written elsewhere (`Videos/Abuse/Abuse028_x264.mp4`, `/data/ucf/Abuse/...`); two files of that name are an error
    naming both. The folder is walked once, and only when some path is not found directly."""

    def __init__(self, video_dir: str | None, data_root: str | None, by_file_name: bool = True):
        self.roots = [r for r in dict.fromkeys([video_dir, data_root]) if r]
        self.by_file_name = by_file_name
        self._index: dict[str, list[str]] | None = None

    def _file_index(self) -> dict[str, list[str]]:
        if self._index is None:
            self._index = {}
            top = next((r for r in self.roots if os.path.isdir(r)), None)
            for folder, _, files in os.walk(top) if top else ():
                for name in files:
                    self._index.setdefault(name, []).append(os.path.join(folder, name))
        return self._index

    def locate(self, name: str) -> tuple[str, str | None]:
        """(path, problem): the file `name` stands for, or the first place looked at and why it is not found."""
        name = name.strip()
        candidates = [os.path.join(root, name) for root in self.roots if not os.path.isabs(name)] + [name]
        for path in candidates:
            if os.path.isfile(path):
                return path, None
        if self.by_file_name:
            found = sorted(self._file_index().get(os.path.basename(name.replace("\\", "/")), []))
            if len(found) == 1:
                return found[0], None
            if len(found) > 1:
                return candidates[0], (f"'{name}' is not under {' or '.join(self.roots) or '.'}, and its file name "
                                       f"matches {len(found)} files: {', '.join(found)}")
        where = ", ".join(dict.fromkeys(candidates))
        by_name = f", nor by file name under {self.roots[0]}" if self.by_file_name and self.roots else ""
        return candidates[0], f"video file not found (looked at {where}{by_name})"


def write_text_atomic(path: str, text: str) -> str:
    """Writes text to a temporary name in the same folder, then renames: a kill or a full disk never leaves a
    half-written file under `path` (the old one, if any, stays whole). Creates the folder. Returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json_atomic(path: str, obj: Any, indent: int | None = None) -> str:
    """JSON of `obj`, written as write_text_atomic writes (never half-written under `path`). Returns `path`."""
    return write_text_atomic(path, json.dumps(obj, indent=indent))
