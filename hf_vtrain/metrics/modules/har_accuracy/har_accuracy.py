"""HAR top-1 / top-5 / mean class accuracy as an `evaluate` metric module: `evaluate.load(path("har_accuracy"))` with
`from hf_vtrain.metrics.modules import path`.

The computation is `hf_vtrain.metrics.har.evaluate_recognition`, the one behind `python -m hf_vtrain.metrics.har` and
the har Trainer's `compute_metrics`.
"""

import datasets
import evaluate

from hf_vtrain.metrics.har import evaluate_recognition
from hf_vtrain.metrics.modules import metric_info

_DESCRIPTION = """Action recognition accuracy as MMAction2 reports it: top-1 and top-5 (top-k with k = min(5, classes))
over the samples' class scores, and mean class accuracy (the mean over classes of each class's top-1 recall). Percent."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per sample: the class scores (a list of floats, every row the same length).
    references: the class index of each sample.
Returns:
    top1_acc, top5_acc, mean_class_acc, in percent.
Examples:
    >>> import evaluate
    >>> from hf_vtrain.metrics.modules import path
    >>> har = evaluate.load(path("har_accuracy"))
    >>> har.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1])["top1_acc"]
    50.0
"""

_CITATION = """@inproceedings{shahroudy2016ntu, title={NTU RGB+D: A large scale dataset for 3D human activity analysis},
author={Shahroudy, Amir and Liu, Jun and Ng, Tian-Tsong and Wang, Gang}, booktitle={CVPR}, year={2016}}"""


_FEATURES = {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
_URL = "https://github.com/open-mmlab/mmaction2"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HarAccuracy(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, _FEATURES, _URL)

    def _compute(self, predictions, references):
        return evaluate_recognition(references, predictions).as_dict()
