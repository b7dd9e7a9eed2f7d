"""COCO detection mAP through pycocotools (the field's reference implementation, not a re-implementation):
mAP@0.5 is COCOeval's `stats[1]` (101-point interpolated precision, all areas, the last maxDets), mAP@0.5:0.95 its
`stats[0]`. What this module adds is only what COCO's evaluator assumes of its inputs:

- every evaluated frame is an image of the ground truth, also a frame with no drone (its false positives count);
- annotation ids start at 1 (pycocotools treats id 0 as "no match");
- predicted boxes stay floats ([x, y, w, h] in pixels: truncating them to integers costs small objects much of
  mAP@0.5:0.95);
- the largest maxDets is the recipe's `max_detections` (COCO's 100 by default);
- no detection at all is mAP 0 (pycocotools' loadRes cannot take an empty list).

CLI: `python -m hf_vtrain.metrics.det GT.json PREDICTIONS.json [--max-detections N]`, GT a COCO ground-truth file
(images, annotations, categories), PREDICTIONS a COCO results list ({image_id, category_id, bbox, score}) or
{"detections": [...]}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from dataclasses import dataclass, field

import numpy as np

STAT_NAMES = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_max",
              "mar_small", "mar_medium", "mar_large")


def coco_ground_truth(images: list[dict], boxes: list[list[tuple]], categories: list[str]) -> dict:
    """A COCO ground-truth dataset: `images` [{id, width, height, file_name}] (ids >= 1), `boxes` per image a list
    of (x1, y1, x2, y2, class index) in pixels, `categories` the class names (category id = class index + 1)."""
    annotations = []
    for image, image_boxes in zip(images, boxes):
        for x1, y1, x2, y2, cls in image_boxes:
            w, h = float(x2) - float(x1), float(y2) - float(y1)
            annotations.append({"id": len(annotations) + 1, "image_id": int(image["id"]), "category_id": int(cls) + 1,
                                "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": 0})
    return {"images": [dict(image) for image in images], "annotations": annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(categories)]}


def check_ground_truth(dataset: dict) -> None:
    ids = [a["id"] for a in dataset["annotations"]]
    if ids and min(ids) < 1:
        raise ValueError("COCO ground truth: annotation ids must be >= 1 (pycocotools treats 0 as no match)")
    if len(set(ids)) != len(ids):
        raise ValueError("COCO ground truth: annotation ids must be unique")
    images = {im["id"] for im in dataset["images"]}
    stray = sorted({a["image_id"] for a in dataset["annotations"]} - images)
    if stray:
        raise ValueError(f"COCO ground truth: annotations of images not in `images`: {stray[:5]}")


@dataclass
class DetectionResult:
    stats: dict[str, float]  # COCOeval's 12 summary numbers, by STAT_NAMES
    num_images: int
    num_ground_truth: int
    num_detections: int
    max_detections: int
    # precision at IoU 0.5 over COCO's 101 recall points, per category (-1 where a category has no ground truth)
    pr_recall: np.ndarray = field(default_factory=lambda: np.linspace(0, 1, 101))
    pr_precision: np.ndarray | None = None
    categories: list[str] = field(default_factory=list)

    @property
    def map_50(self) -> float:
        return self.stats["map_50"]

    @property
    def map(self) -> float:
        return self.stats["map"]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in self.stats.items()}

    def table(self) -> str:
        rows = [f"{'mAP@0.5:0.95':18s}{100 * self.stats['map']:8.2f}",
                f"{'mAP@0.5':18s}{100 * self.stats['map_50']:8.2f}",
                f"{'mAP@0.75':18s}{100 * self.stats['map_75']:8.2f}",
                f"{f'AR@{self.max_detections}':18s}{100 * self.stats['mar_max']:8.2f}",
                f"{'images':18s}{self.num_images:8d}  (ground-truth boxes {self.num_ground_truth}, detections "
                f"{self.num_detections})"]
        return "\n".join(rows)


def evaluate_detections(ground_truth: dict, detections: list[dict], max_detections: int = 100) -> DetectionResult:
    """COCOeval (bbox) of `detections` against `ground_truth` (a COCO dataset dict). Detections of images outside the
    ground truth are an error (they would be dropped silently)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    check_ground_truth(ground_truth)
    images = {im["id"] for im in ground_truth["images"]}
    stray = sorted({d["image_id"] for d in detections} - images)
    if stray:
        raise ValueError(f"detections of images not in the ground truth: {stray[:5]}")
    categories = [c["name"] for c in sorted(ground_truth["categories"], key=lambda c: c["id"])]
    base = dict(num_images=len(images), num_ground_truth=len(ground_truth["annotations"]),
                num_detections=len(detections), max_detections=max_detections, categories=categories)
    if not detections:
        return DetectionResult(stats={k: 0.0 for k in STAT_NAMES}, **base)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(ground_truth))  # pycocotools keeps and edits what it is given
        gt.createIndex()
        dt = gt.loadRes([{**d, "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])}
                         for d in detections])
        evaluator = COCOeval(gt, dt, "bbox")
        # COCOeval sorts maxDets and reads the third as "max": the recipe's limit is the largest, at most 10 second
        evaluator.params.maxDets = [1, min(10, int(max_detections)), int(max_detections)]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {k: float(v) for k, v in zip(STAT_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, every recall point, category, all areas
    return DetectionResult(stats=stats, pr_precision=np.asarray(precision, dtype=np.float64).T, **base)


def read_detections(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, dict):
        data = data.get("detections")
    if not isinstance(data, list):
        raise ValueError(f"{path}: a COCO results list (or {{\"detections\": [...]}}) is expected")
    for i, d in enumerate(data):
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in d]
        if missing:
            raise ValueError(f"{path}: detection {i} lacks {missing}")
    return data


def main(argv: list[str] | None = None) -> int:
    from ..exit_codes import BAD_INPUT

    parser = argparse.ArgumentParser(prog="python -m hf_vtrain.metrics.det", description=__doc__.split("\n\n")[0])
    parser.add_argument("ground_truth", help="COCO ground-truth JSON (images, annotations, categories)")
    parser.add_argument("predictions", help="COCO results JSON: [{image_id, category_id, bbox, score}]")
    parser.add_argument("--max-detections", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        with open(args.ground_truth, encoding="utf-8") as handle:
            gt = json.load(handle)
        result = evaluate_detections(gt, read_detections(args.predictions), args.max_detections)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT
    print(result.table())
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
