"""What the corpus loaders share: the error that lists a corpus's problems, and the glue between per-row sample
transforms and `datasets`' batched `set_transform`."""

from __future__ import annotations

import abc
import os

import torch


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
