"""Detection COCO mAP as an `evaluate` metric module: `evaluate.load(path("det_coco_map"))` with
`from hf_vtrain.metrics.modules import path`.

The computation is `hf_vtrain.metrics.det.evaluate_detections` (pycocotools' COCOeval), the one behind
`python -m hf_vtrain.metrics.det` and the det Trainer's `compute_metrics`.
"""

import datasets
import evaluate

from hf_vtrain.metrics.det import coco_ground_truth, evaluate_detections
from hf_vtrain.metrics.modules import metric_info

_DESCRIPTION = """COCO box mAP through pycocotools' COCOeval: mAP@0.5:0.95 (map), mAP@0.5 (map_50), mAP@0.75, by size, and
mean recall at 1, 10 and max_detections detections per image. Every referenced image counts, empty ones included (a
detection there is a false positive); boxes stay floats (a small drone is a few pixels). Fractions, as COCOeval."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per image: {"image_id": int >= 1, "boxes": [[x1, y1, x2, y2], ...] (pixels),
        "scores": [...], "labels": [class index, ...]}.
    references: one row per evaluated image: {"image_id": int >= 1, "width": int, "height": int,
        "boxes": [[x1, y1, x2, y2], ...], "labels": [...]} ([] for an empty frame).
    class_names: the classes (default: class_0 .. up to the largest index seen).
    max_detections: COCO's maxDets (100).
Returns:
    map, map_50, map_75, map_small, map_medium, map_large, mar_1, mar_10, mar_max, mar_small, mar_medium, mar_large.
Examples:
    >>> import evaluate
    >>> from hf_vtrain.metrics.modules import path
    >>> det = evaluate.load(path("det_coco_map"))
    >>> round(det.compute(predictions=[{"image_id": 1, "boxes": [[10.0, 10.0, 20.0, 20.0]], "scores": [0.9], "labels": [0]}],
    ...             references=[{"image_id": 1, "width": 64, "height": 64, "boxes": [[10.0, 10.0, 20.0, 20.0]],
    ...                          "labels": [0]}])["map_50"], 6)
    1.0
"""

_CITATION = """@inproceedings{lin2014microsoft, title={Microsoft COCO: Common objects in context}, author={Lin,
Tsung-Yi and others}, booktitle={ECCV}, year={2014}}"""

_BOXES = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))


_FEATURES = {
    "predictions": {"image_id": datasets.Value("int64"), "boxes": _BOXES,
                    "scores": datasets.Sequence(datasets.Value("float64")),
                    "labels": datasets.Sequence(datasets.Value("int64"))},
    "references": {"image_id": datasets.Value("int64"), "width": datasets.Value("int64"),
                   "height": datasets.Value("int64"), "boxes": _BOXES,
                   "labels": datasets.Sequence(datasets.Value("int64"))},
}
_URL = "https://github.com/cocodataset/cocoapi"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DetCocoMap(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, _FEATURES, _URL)

    def _compute(self, predictions, references, class_names=None, max_detections=100):
        if class_names is None:
            largest = max([-1] + [max(r["labels"], default=-1) for r in [*references, *predictions]])
            class_names = [f"class_{i}" for i in range(largest + 1)]
        images = [{"id": r["image_id"], "width": r["width"], "height": r["height"], "file_name": str(r["image_id"])}
                  for r in references]
        boxes = [[(*box, label) for box, label in zip(r["boxes"], r["labels"])] for r in references]
        detections = [{"image_id": row["image_id"], "category_id": int(label) + 1,
                       "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
                      for row in predictions
                      for (x1, y1, x2, y2), score, label in zip(row["boxes"], row["scores"], row["labels"])]
        result = evaluate_detections(coco_ground_truth(images, boxes, list(class_names)), detections,
                                     max_detections=max_detections)
        return dict(result.stats)
