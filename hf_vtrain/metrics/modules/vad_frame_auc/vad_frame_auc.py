"""VAD frame-level AUC / AP as an `evaluate` metric module: `evaluate.load(path("vad_frame_auc"))` with
`from hf_vtrain.metrics.modules import path`.

The computation is `hf_vtrain.metrics.vad.evaluate_frame_auc`, the one behind `python -m hf_vtrain.metrics.vad` and the
vad Trainer's `compute_metrics`: this file only turns rows into its inputs.
"""

import datasets
import evaluate

from hf_vtrain.metrics.modules import metric_info
from hf_vtrain.metrics.vad import SNIPPET_FRAMES, evaluate_frame_auc

_DESCRIPTION = """Frame-level video anomaly detection metrics, UCF-Crime protocol (VadCLIP's and RTFM's evaluation):
each per-snippet score repeated over its 16 frames, the ground truth built for exactly those frames, the videos
concatenated in reference order; ROC-AUC and AP over all frames (as scikit-learn's roc_auc_score and
average_precision_score), and AUC over the frames of the anomalous videos (auc_anomalous_only). Percent."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per video: {"video_id": str, "scores": [one score per 16-frame snippet]}.
    references: one row per evaluated video, in evaluation order: {"video_id": str, "segments": [[start, end], ...]
        (end-exclusive frame indices of the anomalies; [] for a normal video), "num_frames": decoded frame count,
        or -1 not to check the snippet count}.
    snippet: frames per score (16).
Returns:
    auc, ap, auc_anomalous_only, in percent.
Examples:
    >>> import evaluate
    >>> from hf_vtrain.metrics.modules import path
    >>> vad = evaluate.load(path("vad_frame_auc"))
    >>> vad.compute(predictions=[{"video_id": "a", "scores": [0.1, 0.9]}, {"video_id": "n", "scores": [0.2, 0.1]}],
    ...             references=[{"video_id": "a", "segments": [[16, 32]], "num_frames": 32},
    ...                         {"video_id": "n", "segments": [], "num_frames": 32}])["auc"]
    100.0
"""

_CITATION = """@inproceedings{sultani2018real, title={Real-world anomaly detection in surveillance videos},
author={Sultani, Waqas and Chen, Chen and Shah, Mubarak}, booktitle={CVPR}, year={2018}}"""


_FEATURES = {
    "predictions": {"video_id": datasets.Value("string"),
                    "scores": datasets.Sequence(datasets.Value("float64"))},
    "references": {"video_id": datasets.Value("string"),
                   "segments": datasets.Sequence(datasets.Sequence(datasets.Value("int64"), length=2)),
                   "num_frames": datasets.Value("int64")},
}
_URL = "https://github.com/nwpu-zxr/VadCLIP"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VadFrameAuc(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, _FEATURES, _URL)

    def _compute(self, predictions, references, snippet=SNIPPET_FRAMES):
        annotations = {row["video_id"]: [tuple(segment) for segment in row["segments"]] for row in references}
        test_list = [row["video_id"] for row in references]
        scores = {}
        for row in predictions:
            if row["video_id"] in scores:
                raise ValueError(f"predictions: video {row['video_id']!r} given twice")
            scores[row["video_id"]] = list(row["scores"])
        frames = [row["num_frames"] for row in references]
        num_frames = dict(zip(test_list, frames)) if all(f >= 0 for f in frames) else None
        return evaluate_frame_auc(annotations, test_list, scores, num_frames=num_frames, snippet=snippet).as_dict()
