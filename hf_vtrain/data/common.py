"""What the corpus loaders share: the error that lists a corpus's problems, and the glue between per-row sample
transforms and `datasets`' batched `set_transform`."""

from __future__ import annotations

import abc


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


def set_dataset_epoch(dataset, epoch: int) -> None:
    """Sets the epoch of the window transform attached to `dataset` (with set_transform). DataLoader workers see
    it only if they are started after the call (persistent_workers=False)."""
    transform = (dataset.format.get("format_kwargs") or {}).get("transform")
    if hasattr(transform, "set_epoch"):
        transform.set_epoch(epoch)
