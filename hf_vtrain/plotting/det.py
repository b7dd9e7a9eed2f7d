"""Pictures of task `det`: the precision-recall curve of an evaluation (COCO's 101 recall points at IoU 0.5, per
class) and evaluation frames drawn with their true boxes (green) and predicted boxes above a score (red, with the
score)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_precision_recall(result, path: str, title: str = "") -> str:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if result.pr_precision is not None:
        for name, precision in zip(result.categories, result.pr_precision):
            shown = np.where(precision < 0, np.nan, precision)
            ax.plot(result.pr_recall, shown, label=name)
        ax.legend(loc="lower left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated, COCO)")
    ax.set_title(f"{title}{': ' if title else ''}mAP@0.5 {100 * result.map_50:.1f}, "
                 f"mAP@0.5:0.95 {100 * result.map:.1f}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_boxes(image: np.ndarray, true_boxes, predicted: list[dict], class_names: list[str],
               min_score: float = 0.3) -> np.ndarray:
    """(H, W, 3) uint8 with the true boxes ([x1, y1, x2, y2, cls]) in green and the predictions (COCO results of the
    frame) scoring at least `min_score` in red."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for x1, y1, x2, y2, _ in true_boxes:
        draw.rectangle([x1, y1, x2, y2], outline=(0, 255, 0))
    for d in predicted:
        if d["score"] < min_score:
            continue
        x, y, w, h = d["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=(255, 0, 0))
        name = class_names[d["category_id"] - 1] if 0 < d["category_id"] <= len(class_names) else "?"
        draw.text((x, max(0, y - 10)), f"{name} {d['score']:.2f}", fill=(255, 0, 0))
    return np.asarray(canvas)


def draw_frames(records: list[dict], detections: list[dict], folder: str, class_names: list[str],
                count: int = 8) -> list[str]:
    """`count` evaluation frames spread over the split (image id = 1-based index), drawn as PNGs into `folder`."""
    from PIL import Image

    if not records or count <= 0:
        return []
    os.makedirs(folder, exist_ok=True)
    by_image: dict[int, list[dict]] = {}
    for d in detections:
        by_image.setdefault(d["image_id"], []).append(d)
    paths = []
    for index in np.linspace(0, len(records) - 1, min(count, len(records))).round().astype(int).tolist():
        r = records[index]
        with Image.open(r["image"]) as image:
            frame = np.asarray(image.convert("RGB"))
        drawn = draw_boxes(frame, r["boxes"], by_image.get(index + 1, []), class_names)
        path = os.path.join(folder, f"frame{index + 1:06d}.png")
        Image.fromarray(drawn).save(path)
        paths.append(path)
    return paths
