"""Tests of the offline CLIP tokenizer built from `bpe_simple_vocab_16e6.txt.gz`: vocabulary, known token ids,
files in the Hub's layout, offline AutoTokenizer loading, bytes for Chinese text, truncation.

Needs the BPE file: `pip install --no-deps clip-anytorch==2.6.0` (or $HF_VTRAIN_CLIP_BPE pointing at the gz)."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_vtrain.data.clip_tokenizer import (
    BPE_ENV_VAR,
    VOCAB_SIZE,
    bpe_vocab_to_files,
    build_clip_tokenizer,
    bytes_to_unicode,
    find_bpe_vocab,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# openai/clip-vit-base-patch32 (same vocabulary as patch16) gives these ids; the first two are asserted by
# elixir-nx/bumblebee, test/bumblebee/text/clip_tokenizer_test.exs, which loads the Hub tokenizer.
KNOWN_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a photo of a dog": [49406, 320, 1125, 539, 320, 1929, 49407],
}
# Sizes of the files in the Hub's layout: compact UTF-8 JSON without a final newline; header + 48,894 merge lines.
VOCAB_JSON_BYTES = 862_328
MERGES_TXT_BYTES = 524_619
# Pinned from this converter's output, so that any change in the written bytes is noticed.
VOCAB_JSON_SHA256 = "5047b556ce86ccaf6aa22b3ffccfc52d391ea4accdab9c2f2407da5b742d4363"
MERGES_TXT_SHA256 = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"


@pytest.fixture(scope="module")
def bpe_path():
    try:
        return find_bpe_vocab()
    except FileNotFoundError as e:
        pytest.fail(f"{e} (the tests need the real CLIP BPE file)")


@pytest.fixture(scope="module")
def tokenizer_dir(bpe_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip_tokenizer")
    build_clip_tokenizer(out, bpe_gz_path=bpe_path)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_bytes_to_unicode_is_a_bijection_in_clip_order():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert list(table)[:3] == [ord("!"), ord('"'), ord("#")]
    assert table[ord(" ")] == "Ġ" and table[ord("a")] == "a"


def test_vocab_and_merges_files(bpe_path, tmp_path):
    vocab_path, merges_path = bpe_vocab_to_files(bpe_path, tmp_path)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    assert len(vocab) == VOCAB_SIZE == 49408
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["a</w>"] == 320 and vocab["in"] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    lines = merges_path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[1] == "i n" and lines[-1] == ""
    assert len(lines) == 1 + 48894 + 1
    assert vocab_path.stat().st_size == VOCAB_JSON_BYTES
    assert merges_path.stat().st_size == MERGES_TXT_BYTES
    assert not vocab_path.read_bytes().endswith(b"\n")


def test_known_token_ids(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE
    for text, ids in KNOWN_IDS.items():
        assert tokenizer(text)["input_ids"] == ids, text
    # CLIP lower-cases and collapses whitespace.
    assert tokenizer("  A   PHOTO of a Cat ")["input_ids"] == KNOWN_IDS["a photo of a cat"]
    assert tokenizer.decode(KNOWN_IDS["a photo of a cat"], skip_special_tokens=True) == "a photo of a cat"


def test_chinese_caption_tokenises_as_bytes(tokenizer):
    text = "一名男子在商店里偷东西"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 49407
    body = ids[1:-1]
    # No unknown token (the unk token is <|endoftext|>): every byte has a token.
    assert body and all(0 <= i < 49406 for i in body)
    assert len(body) <= len(text.encode("utf-8"))
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_long_caption_truncation_and_padding(tokenizer, tokenizer_dir):
    caption = " ".join(["a man in a red jacket walks past the counter"] * 40)
    enc = tokenizer(caption, truncation=True)
    assert len(enc["input_ids"]) == 77 == tokenizer.model_max_length
    assert enc["input_ids"][0] == 49406 and enc["input_ids"][-1] == 49407
    padded = tokenizer(["a cat", caption], padding="max_length", truncation=True, return_tensors="pt")
    assert tuple(padded["input_ids"].shape) == (2, 77)
    assert padded["input_ids"][0, :4].tolist() == [49406, 320, 2368, 49407]
    assert padded["input_ids"][0, 4:].eq(49407).all()  # CLIP pads with <|endoftext|>
    assert padded["attention_mask"][0].sum().item() == 4


def test_long_text_positions_for_fg_clip(bpe_path, tmp_path):
    tok = build_clip_tokenizer(tmp_path, model_max_length=248, bpe_gz_path=bpe_path)
    caption = " ".join(["a man in a red jacket walks past the counter"] * 40)
    assert len(tok(caption, truncation=True)["input_ids"]) == 248
    with pytest.raises(ValueError, match="model_max_length"):
        build_clip_tokenizer(tmp_path / "x", model_max_length=1, bpe_gz_path=bpe_path)


def test_saved_folder_loads_offline_in_a_fresh_process(tokenizer_dir, tmp_path):
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tokenizer_dir))
    script = (
        "import sys; from transformers import AutoTokenizer; "
        "t = AutoTokenizer.from_pretrained(sys.argv[1]); "
        "print(type(t).__name__, len(t), t.model_max_length, t('a photo of a cat')['input_ids'])"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tokenizer_dir)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" ", 3) == ["CLIPTokenizer", "49408", "77", f"{KNOWN_IDS['a photo of a cat']}\n"]


def test_find_bpe_vocab_does_not_import_the_package(bpe_path):
    code = (
        "import sys; from hf_vtrain.data.clip_tokenizer import find_bpe_vocab; p = find_bpe_vocab(); "
        "print(p.name, 'clip' in sys.modules, 'open_clip' in sys.modules, 'torchvision' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != BPE_ENV_VAR}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["bpe_simple_vocab_16e6.txt.gz", "False", "False", "False"]


def test_find_bpe_vocab_env_override(bpe_path, monkeypatch, tmp_path):
    monkeypatch.setenv(BPE_ENV_VAR, str(bpe_path))
    assert find_bpe_vocab() == Path(bpe_path)
    monkeypatch.setenv(BPE_ENV_VAR, str(tmp_path / "nope.gz"))
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        find_bpe_vocab()


def test_bad_bpe_files_are_refused(tmp_path):
    plain = tmp_path / "plain.txt.gz"
    plain.write_text("not gzip")
    with pytest.raises(ValueError, match=r"plain\.txt\.gz: not a gzip"):
        bpe_vocab_to_files(plain, tmp_path / "out")
    short = tmp_path / "short.txt.gz"
    with gzip.open(short, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\ni n\nt h\n")
    with pytest.raises(ValueError, match=r"short\.txt\.gz: 3 merge lines, CLIP needs 48894"):
        bpe_vocab_to_files(short, tmp_path / "out")
    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\ni n\nt h x\n" + "a b\n" * 48900)
    with pytest.raises(ValueError, match=r"bad\.txt\.gz:3: a merge is two symbols"):
        bpe_vocab_to_files(bad, tmp_path / "out")


def test_file_bytes_are_pinned(bpe_path, tmp_path):
    vocab_path, merges_path = bpe_vocab_to_files(bpe_path, tmp_path)
    assert hashlib.sha256(vocab_path.read_bytes()).hexdigest() == VOCAB_JSON_SHA256
    assert hashlib.sha256(merges_path.read_bytes()).hexdigest() == MERGES_TXT_SHA256
