"""What the corpus loaders share: the error that lists a corpus's problems, and the glue between per-row sample
transforms and `datasets`' batched `set_transform`."""

from __future__ import annotations

import abc

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
