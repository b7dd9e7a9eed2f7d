"""Bad input, fuzzed (hypothesis): recipes and annotation files either load or fail with one clear error naming the
file and entry - never a traceback from deep inside a library, never a hang."""

import json
import os
import shutil
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_vtrain.data.synthetic_thumos14 import make_synthetic_thumos14
from hf_vtrain.data.thumos14 import TADDataArguments, validate_thumos14
from hf_vtrain.metrics.tad import evaluate_detections
from hf_vtrain.metrics.vad import read_temporal_annotation
from hf_vtrain.parser import RecipeError, parse_args
from hf_vtrain.run import RUN_KEYS
from hf_vtrain.tasks import get_task

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
SPEC = get_task("tad")
TYPES = (SPEC.model_args, SPEC.data_args, SPEC.training_args)
KEYS = sorted({f for cls in TYPES for f in cls.__dataclass_fields__} | set(RUN_KEYS))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(string.ascii_letters, max_size=6),
                                                                       inner, max_size=3)), max_leaves=6)


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(string.ascii_lowercase + "_", min_size=1,
                                                                 max_size=15)), values, max_size=6))
def test_recipe_fuzz(tmp_path_factory, recipe):
    path = tmp_path_factory.mktemp("recipe") / "r.yaml"
    import yaml

    try:
        path.write_text(yaml.safe_dump({"output_dir": "/tmp/fuzz", **recipe}))
    except yaml.YAMLError:
        return
    try:
        parse_args([str(path)], TYPES, extra_keys=RUN_KEYS)
    except RecipeError as err:
        assert "r.yaml" in str(err) or "command line" in str(err)


@FUZZ
@given(st.text(max_size=300))
def test_recipe_text_fuzz(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("recipe") / "r.yaml"
    path.write_text(text)
    try:
        parse_args([str(path), "--output_dir", "/tmp/fuzz"], TYPES, extra_keys=RUN_KEYS)
    except RecipeError as err:
        assert "r.yaml" in str(err) or "command line" in str(err)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "c"
    make_synthetic_thumos14(root, num_train_videos=2, num_test_videos=1, height=32, width=64, fps=10,
                            min_duration=4, max_duration=5, action_duration=(1.0, 2.0), seed=3)
    return root


entries = st.fixed_dictionaries({}, optional={
    "subset": st.one_of(st.sampled_from(["training", "validation"]), scalars),
    "duration": st.one_of(st.floats(-5, 50), scalars),
    "frame": st.one_of(st.integers(-5, 500), scalars),
    "annotations": st.one_of(st.lists(st.fixed_dictionaries({}, optional={
        "label": st.one_of(st.sampled_from(["BaseballPitch", "Ambiguous", "Nope"]), scalars),
        "segment": st.one_of(st.lists(st.one_of(st.floats(-5, 60), scalars), max_size=3), scalars)}), max_size=3),
        scalars)})


@FUZZ
@given(st.data())
def test_annotation_fuzz(corpus, tmp_path_factory, data):
    """A mutated OpenTAD annotation file: validation returns a report (problems listed), never crashes."""
    root = tmp_path_factory.mktemp("anno")
    for name in ("annotations",):
        shutil.copytree(corpus / name, root / name)
    os.symlink(corpus / "raw_data", root / "raw_data")
    path = root / "annotations" / "thumos_14_anno.json"
    database = json.loads(path.read_text())["database"]
    vid = data.draw(st.sampled_from(sorted(database)))
    mutated = {**database[vid], **data.draw(entries)}
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        document = {"database": {**database, vid: mutated}}
    elif choice == 1:
        document = {"database": data.draw(values)}
    elif choice == 2:
        document = data.draw(values)
    else:
        document = None
    path.write_text(json.dumps(document) if document is not None else data.draw(st.text(max_size=50)))
    report = validate_thumos14(TADDataArguments(data_root=str(root), sample_stride=2, window_size=16,
                                                eval_window_stride=8, validate_workers=1))
    text = report.format()
    if not report.ok:
        assert report.problems and all(isinstance(p, str) and p for p in report.problems)
        assert "thumos_14_anno.json" in text or vid in text or "video" in text


@FUZZ
@given(st.lists(st.text(string.printable.replace("\x0b", "").replace("\x0c", ""), max_size=40), max_size=5))
def test_vad_annotation_fuzz(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("vad") / "Temporal_Anomaly_Annotation.txt"
    path.write_text("\n".join(lines))
    try:
        read_temporal_annotation(path)
    except ValueError as err:
        assert "Temporal_Anomaly_Annotation.txt" in str(err)


@FUZZ
@given(values, values)
def test_metric_input_fuzz(gt, pred):
    try:
        evaluate_detections({"database": gt} if isinstance(gt, dict) else gt,
                            {"results": pred} if isinstance(pred, dict) else pred, subset=None)
    except ValueError:
        pass
    except OSError as err:  # a string is a path to a JSON file (missing, unreadable); the error names it
        assert isinstance(gt, str) or isinstance(pred, str), err


@pytest.fixture(scope="module")
def ucf_corpus(tmp_path_factory):
    from hf_vtrain.data.synthetic_ucf_crime import make_synthetic_ucf_crime

    root = tmp_path_factory.mktemp("fuzz_ucf") / "c"
    make_synthetic_ucf_crime(root, num_train_normal=1, num_train_anomalous=1, num_test_normal=1,
                             num_test_anomalous=1, anomaly_classes=("Abuse",), min_duration=3, max_duration=4,
                             clip_duration=(1.0, 2.0), num_region_negatives=0, seed=5)
    return root


records = st.fixed_dictionaries({}, optional={
    "video": st.one_of(st.sampled_from(["Abuse/Abuse001_x264.mp4", "Nope/None.mp4"]), scalars),
    "global_caption": st.one_of(st.text(max_size=20), scalars),
    "region_captions": st.one_of(st.lists(st.one_of(st.text(max_size=10), scalars), max_size=3), scalars),
    "box_infos": st.one_of(st.lists(st.one_of(st.lists(st.fixed_dictionaries({}, optional={
        "frame": st.one_of(st.integers(-5, 500), scalars),
        "bbox": st.one_of(st.lists(st.one_of(st.floats(-1, 2), scalars), max_size=5), scalars)}), max_size=3),
        scalars), max_size=3), scalars),
    "timestamps": st.one_of(st.none(), st.lists(st.one_of(st.floats(-5, 50), scalars), max_size=3), scalars),
})


@FUZZ
@given(st.data())
def test_ucf_training_json_fuzz(ucf_corpus, tmp_path_factory, data):
    """A mutated FG-CLIP training JSON: validation returns a report listing problems, never crashes."""
    from hf_vtrain.data.ucf_crime import VADDataArguments, validate_ucf_crime

    root = tmp_path_factory.mktemp("ucf")
    for entry in os.listdir(ucf_corpus):
        os.symlink(ucf_corpus / entry, root / entry)
    os.unlink(root / "ucf_fgclip_train.json")
    original = json.loads((ucf_corpus / "ucf_fgclip_train.json").read_text())
    choice = data.draw(st.integers(0, 2))
    if choice == 0:
        index = data.draw(st.integers(0, len(original) - 1))
        document = list(original)
        document[index] = {**original[index], **data.draw(records)}
    elif choice == 1:
        document = data.draw(values)
    else:
        document = data.draw(st.lists(records, max_size=3))
    (root / "ucf_fgclip_train.json").write_text(json.dumps(document))
    report = validate_ucf_crime(VADDataArguments(data_root=str(root), validate_workers=1))
    if not report.ok:
        assert report.problems and all(isinstance(p, str) and p for p in report.problems)
