"""The task metrics as `evaluate` modules, shipped inside the package so that they load offline:

    import evaluate
    from hf_vtrain.metrics.modules import path
    tad_map = evaluate.load(path("tad_map"))

Each module's computation is the one in `hf_vtrain.metrics.<task>` (the CLI's and the Trainer's); the module turns
`add_batch`/`compute` rows into its inputs.
"""

import os

MODULES = ("tad_map", "vad_frame_auc", "har_accuracy", "det_coco_map")


def path(name: str) -> str:
    """The folder of the module `name` (one of MODULES), for `evaluate.load`."""
    if name not in MODULES:
        raise ValueError(f"unknown metric module {name!r}; choose one of {', '.join(MODULES)}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def metric_info(description: str, inputs: str, citation: str, features: dict, url: str):
    """The `evaluate.MetricInfo` of a module here (what evaluate shows of it), its input rows typed by `features`."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(description=description, citation=citation, inputs_description=inputs,
                               features=datasets.Features(features), reference_urls=[url])
