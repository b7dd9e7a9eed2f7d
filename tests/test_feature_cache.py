"""The feature cache: another model or preprocessing gives another folder, items are complete or absent (a failing
computation leaves nothing), an extraction resumes where it stopped, processes split the items, keys with slashes."""

import json

import pytest
import torch

from hf_vtrain.feature_cache import FeatureCache, extract, model_fingerprint, shard


def _model(tmp_path, name, value):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "x", "hidden": 4, "transformers_version": "1"}))
    from safetensors.torch import save_file

    save_file({"w": torch.full((2, 2), float(value))}, str(folder / "model.safetensors"))
    return folder


def test_a_changed_model_or_preprocessing_is_another_cache(tmp_path):
    a, b = _model(tmp_path, "a", 1.0), _model(tmp_path, "b", 2.0)
    same = _model(tmp_path, "a_copy", 1.0)
    pre = {"image_size": 224, "snippet_frames": 16}
    ca = FeatureCache(str(tmp_path / "cache"), {"model": model_fingerprint(str(a)), "pre": pre})
    assert FeatureCache(str(tmp_path / "cache"), {"model": model_fingerprint(str(same)), "pre": pre}).id == ca.id
    assert FeatureCache(str(tmp_path / "cache"), {"model": model_fingerprint(str(b)), "pre": pre}).id != ca.id
    assert FeatureCache(str(tmp_path / "cache"),
                        {"model": model_fingerprint(str(a)), "pre": {**pre, "image_size": 256}}).id != ca.id
    with pytest.raises(ValueError, match="no config.json"):
        model_fingerprint(str(tmp_path / "cache" / ca.id))
    (tmp_path / "a" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no weight file"):
        model_fingerprint(str(a))


def test_extraction_resumes_and_shards_and_never_leaves_half_items(tmp_path):
    cache = FeatureCache(str(tmp_path), {"v": 1})
    keys = [f"Explosion/Explosion{i:03d}_x264" for i in range(7)]
    calls = []

    def compute(key):
        calls.append(key)
        if key == keys[3] and len(calls) == 4:
            raise RuntimeError("killed")
        return {"features": torch.full((3, 2), float(keys.index(key)))}

    with pytest.raises(RuntimeError):
        extract(cache, keys, compute)
    assert cache.missing(keys) == keys[3:]
    assert not [p for p in (tmp_path / cache.id).iterdir() if ".tmp-" in p.name]
    calls.clear()
    assert extract(cache, keys, compute) == 4 and calls == keys[3:]  # resumed where it stopped
    assert extract(cache, keys, compute) == 0  # all cached
    assert torch.equal(cache.load(keys[5])["features"], torch.full((3, 2), 5.0))
    assert shard(keys, 0, 2) + shard(keys, 1, 2) == keys[0::2] + keys[1::2]
    assert sorted(shard(keys, 0, 3) + shard(keys, 1, 3) + shard(keys, 2, 3)) == sorted(keys)
