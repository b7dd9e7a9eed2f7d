"""The restricted unpickler: PYSKL-style annotations load at every protocol; anything else is refused, uncalled."""

import os
import pickle

import numpy as np
import pytest

from hf_vtrain.data.restricted_pickle import RefusedPickleError, load_restricted


def annotations():
    return {"split": {"xsub_train": ["S001C001P001R001A001"], "xsub_val": []},
            "annotations": [{"frame_dir": "S001C001P001R001A001", "label": 0, "total_frames": 3, "img_shape": (1080, 1920),
                             "keypoint": np.arange(2 * 3 * 17 * 2, dtype=np.float32).reshape(2, 3, 17, 2),
                             "keypoint_score": np.ones((2, 3, 17), np.float16), "count": np.int64(7),
                             "flags": [True, None, 1.5]}]}


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_annotations_load_at_every_protocol(tmp_path, protocol):
    path = tmp_path / "ann.pkl"
    path.write_bytes(pickle.dumps(annotations(), protocol=protocol))
    loaded = load_restricted(path)
    original = annotations()
    assert loaded["split"] == original["split"]
    got, want = loaded["annotations"][0], original["annotations"][0]
    assert got["keypoint"].dtype == np.float32 and np.array_equal(got["keypoint"], want["keypoint"])
    assert got["keypoint_score"].dtype == np.float16 and got["count"] == 7 and got["img_shape"] == (1080, 1920)
    assert got["flags"] == [True, None, 1.5]


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Custom:
    pass


def test_code_in_a_pickle_is_refused_and_not_run(tmp_path):
    payload = Payload()
    payload.marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"annotations": [payload]}))
    with pytest.raises(RefusedPickleError, match=r"evil\.pkl: holds an object of type (posix|nt|os)\.system"):
        load_restricted(path)
    assert not payload.marker.exists()
    assert pickle.loads(path.read_bytes()) == {"annotations": [0]} and payload.marker.exists()  # what it would do


def test_other_objects_are_refused_naming_their_type(tmp_path):
    path = tmp_path / "custom.pkl"
    path.write_bytes(pickle.dumps([Custom()]))
    with pytest.raises(RefusedPickleError, match=r"type tests\.data\.test_restricted_pickle\.Custom"):
        load_restricted(path)
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(ValueError, match="text.pkl: not a readable pickle"):
        load_restricted(tmp_path / "text.pkl")
