"""Hard negatives for FG-CLIP-format records (data/hard_negatives.py, scripts/make_hard_negatives.py): K distinct
negatives per region caption, each the caption with one or two content words swapped for words of other classes'
captions (same place preferred), a user's list first, existing negatives kept, an error when K cannot be reached."""

import json
import subprocess
import sys

import pytest

from hf_vtrain.data.hard_negatives import add_hard_negatives, content_words

REPO = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.dirname(
    __import__("os").path.abspath(__file__))))

RECORDS = [
    {"video": "Abuse/Abuse001_x264.mp4", "global_caption": "x", "region_captions": ["a man in a red shirt kicking"],
     "box_infos": [[]]},
    {"video": "Arson/Arson001_x264.mp4", "global_caption": "x",
     "region_captions": ["a woman in a blue coat pouring", "a burning green car"], "box_infos": [[], []]},
    {"video": "Training_Normal_Videos_Anomaly/Normal_Videos_001_x264.mp4", "global_caption": "x",
     "region_captions": [], "box_infos": [], "timestamps": [0, 2]},
]


def _words(text):
    return [m.group(0).lower() for m in content_words(text)]


def test_k_distinct_negatives_differing_in_content_words_from_other_classes():
    out, counts = add_hard_negatives(RECORDS, k=10, seed=1)
    assert counts == {"generated": 3, "no regions": 1} and "region_negatives" not in out[2]
    arson_words = {w for c in RECORDS[1]["region_captions"] for w in _words(c)}
    for record in out[:2]:
        assert len(record["region_negatives"]) == len(record["region_captions"])
        for caption, negatives in zip(record["region_captions"], record["region_negatives"]):
            assert len(negatives) == 10 and len(set(negatives)) == 10 and caption not in negatives
            for negative in negatives:
                a, b = _words(caption), _words(negative)
                assert len(a) == len(b) and 1 <= sum(x != y for x, y in zip(a, b)) <= 2, (caption, negative)
                if record is out[0]:  # the Abuse caption's new words come from the other class (Arson)
                    assert {y for x, y in zip(a, b) if x != y} <= arson_words, negative
    # deterministic for a seed
    assert add_hard_negatives(RECORDS, k=10, seed=1)[0] == out


def test_a_users_list_first_existing_negatives_kept_and_too_few_an_error():
    given = {"a burning green car": [f"negative {i}" for i in range(10)]}
    out, counts = add_hard_negatives(RECORDS, k=10, given=given)
    assert out[1]["region_negatives"][1] == given["a burning green car"] and counts["from the list"] == 1
    kept = [dict(RECORDS[0], region_negatives=[["mine"]])]
    assert add_hard_negatives(kept, k=3)[0][0]["region_negatives"] == [["mine"]]
    assert len(add_hard_negatives(kept, k=3, overwrite=True)[0][0]["region_negatives"][0]) == 3
    with pytest.raises(ValueError, match=r"could not get 3 distinct hard negatives.*'the of a'"):
        add_hard_negatives([dict(RECORDS[0], region_captions=["the of a"])], k=3)


def test_the_tool_writes_the_records(tmp_path):
    src, dst = tmp_path / "train.json", tmp_path / "train_hn.json"
    src.write_text(json.dumps(RECORDS))
    proc = subprocess.run([sys.executable, f"{REPO}/scripts/make_hard_negatives.py", str(src), "--out", str(dst),
                           "--k", "4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(dst.read_text())
    assert [len(n) for n in written[1]["region_negatives"]] == [4, 4] and "3 generated" in proc.stdout
    proc = subprocess.run([sys.executable, f"{REPO}/scripts/make_hard_negatives.py", str(tmp_path / "nope.json"),
                           "--out", str(dst)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nope.json" in proc.stderr and "Traceback" not in proc.stderr
