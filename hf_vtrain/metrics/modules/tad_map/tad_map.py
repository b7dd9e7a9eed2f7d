"""TAD mAP as an `evaluate` metric module: `evaluate.load(hf_vtrain.metrics.modules.path("tad_map"))`.

The computation is `hf_vtrain.metrics.tad.evaluate_detections`, the one behind `python -m hf_vtrain.metrics.tad` and
the tad Trainer's `compute_metrics`: this file only turns rows into its two dicts.
"""

import datasets
import evaluate

from hf_vtrain.metrics.modules import metric_info
from hf_vtrain.metrics.tad import DEFAULT_TIOU_THRESHOLDS, evaluate_detections

_DESCRIPTION = """Temporal action detection mAP as ActivityNet's and OpenTAD's evaluators compute it: per class, the
detections of every video ranked by score (stable), each matched to the unmatched ground truth of its video with the
highest tIoU >= t, all-point interpolated AP; the mean over classes at each tIoU threshold and over thresholds
(average_mAP). Predictions on a video outside the evaluated ones ("evaluated": false) are false positives (OpenTAD's
rule) unless outside_subset="ignore". Figures are percent."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per video: {"video_id": str, "segments": [[start, end], ...] (seconds),
        "scores": [float, ...], "labels": [class name, ...]}.
    references: the same videos in the same order: {"video_id": str, "segments": [[start, end], ...],
        "labels": [...], "evaluated": bool} (false: a video outside the evaluated subset, e.g. a training video).
    tiou_thresholds: default (0.3, 0.4, 0.5, 0.6, 0.7), THUMOS-14's.
    class_names: the classes (default: every reference label but ignore_labels, sorted).
    ignore_labels: reference labels that are no class (default ["Ambiguous"], THUMOS-14's).
    outside_subset: "false_positive" (default) or "ignore", for predictions on videos without references.
Returns:
    average_mAP and mAP@t for each threshold, in percent.
Examples:
    >>> import evaluate
    >>> from hf_vtrain.metrics.modules import path
    >>> tad_map = evaluate.load(path("tad_map"))
    >>> tad_map.compute(predictions=[{"video_id": "v", "segments": [[1.0, 5.0]], "scores": [0.9], "labels": ["Jump"]}],
    ...                 references=[{"video_id": "v", "segments": [[1.0, 5.0]], "labels": ["Jump"],
    ...                              "evaluated": True}])["average_mAP"]
    100.0
"""

_CITATION = """@inproceedings{caba2015activitynet, title={ActivityNet: A large-scale video benchmark for human activity
understanding}, author={Caba Heilbron, Fabian and Escorcia, Victor and Ghanem, Bernard and Niebles, Juan Carlos},
booktitle={CVPR}, year={2015}}"""

_SEGMENTS = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=2))


_FEATURES = {
    "predictions": {"video_id": datasets.Value("string"), "segments": _SEGMENTS,
                    "scores": datasets.Sequence(datasets.Value("float64")),
                    "labels": datasets.Sequence(datasets.Value("string"))},
    "references": {"video_id": datasets.Value("string"), "segments": _SEGMENTS,
                   "labels": datasets.Sequence(datasets.Value("string")),
                   "evaluated": datasets.Value("bool")},
}
_URL = "https://github.com/sming256/OpenTAD"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TadMap(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, _FEATURES, _URL)

    def _compute(self, predictions, references, tiou_thresholds=DEFAULT_TIOU_THRESHOLDS, class_names=None,
                 ignore_labels=("Ambiguous",), outside_subset="false_positive"):
        database, results = {}, {}
        for k, (prediction, row) in enumerate(zip(predictions, references)):
            if prediction["video_id"] != row["video_id"]:
                raise ValueError(f"row {k}: prediction of {prediction['video_id']!r}, reference of {row['video_id']!r}")
            if row["video_id"] in database:
                raise ValueError(f"references: video {row['video_id']!r} given twice")
            database[row["video_id"]] = {"subset": "evaluated" if row["evaluated"] else "other", "annotations": [
                {"label": label, "segment": list(segment)} for segment, label in zip(row["segments"], row["labels"])]}
            results[row["video_id"]] = [{"segment": list(segment), "score": score, "label": label}
                                        for segment, score, label in zip(prediction["segments"], prediction["scores"],
                                                                         prediction["labels"])]
        result = evaluate_detections({"database": database}, {"results": results}, subset="evaluated",
                                     tiou_thresholds=tiou_thresholds, class_names=class_names,
                                     ignore_labels=ignore_labels, outside_subset=outside_subset)
        return result.as_dict()
