"""The OpenAI CLIP BPE tokenizer built offline from `bpe_simple_vocab_16e6.txt.gz` (shipped inside the clip-anytorch
and open_clip_torch wheels), saved as a tokenizer folder that `AutoTokenizer.from_pretrained` loads without the Hub."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
# Points at a bpe_simple_vocab_16e6.txt.gz anywhere on disk; checked before the installed packages.
BPE_ENV_VAR = "HF_VTRAIN_CLIP_BPE"
# Packages whose wheels ship the file next to their __init__.py. They are only located (find_spec), never
# imported: both import torchvision, which must not be installed next to torch 2.13 (PyPI's torchvision fails to import there:
# 'operator torchvision::nms does not exist').
BPE_PACKAGES = ("clip", "open_clip")

# As in CLIP's SimpleTokenizer: 49152 BPE tokens = 256 bytes + 48894 merges + 2 (the merges' own header and a
# spare); the vocabulary doubles the 256 byte tokens with their end-of-word forms and adds the two specials.
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2  # 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MERGES_HEADER = "#version: 0.2"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in CLIP's order (printable bytes first)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_bpe_merges(bpe_gz_path: str | os.PathLike) -> list[tuple[str, str]]:
    """The 48,894 merges CLIP uses: lines 1..48894 of the gz (line 0 is a version header, the tail is unused)."""
    path = os.fspath(bpe_gz_path)
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a gzip-compressed UTF-8 BPE merges file ({e})") from e
    lines = text.split("\n")
    if "#version" not in lines[0]:
        raise ValueError(f"{path}:1: expected a '#version' header, found {lines[0][:60]!r}")
    if len(lines) < NUM_MERGES + 1:
        raise ValueError(f"{path}: {len(lines) - 1} merge lines, CLIP needs {NUM_MERGES}")
    merges = []
    for lineno, line in enumerate(lines[1 : NUM_MERGES + 1], start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: a merge is two symbols separated by a space, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """token -> id exactly as CLIP's SimpleTokenizer numbers them (bytes, bytes + '</w>', merges, specials)."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("the merges produce a duplicate token; this is not CLIP's BPE file")
    return vocab


def bpe_vocab_to_files(bpe_gz_path: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Convert CLIP's `bpe_simple_vocab_16e6.txt.gz` into `vocab.json` and `merges.txt` in `out_dir`.

    The files are written in the layout of the Hub's openai/clip-vit-base-patch16 files (compact UTF-8 JSON without
    a trailing newline; '#version: 0.2' then one merge per line, newline-terminated), so they can be compared byte
    for byte. Returns (vocab_json_path, merges_txt_path).
    """
    merges = read_bpe_merges(bpe_gz_path)
    vocab = clip_vocab(merges)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    with open(merges_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(MERGES_HEADER + "\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    return vocab_path, merges_path


def find_bpe_vocab() -> Path:
    """Path of `bpe_simple_vocab_16e6.txt.gz`: $HF_VTRAIN_CLIP_BPE, else inside an installed clip-anytorch
    (`clip`) or open_clip_torch (`open_clip`) package, located without importing it.

    Raises FileNotFoundError saying how to get the file: `pip install --no-deps clip-anytorch==2.6.0` (1.4 MB,
    pure Python; `--no-deps` because its requirements include torchvision).
    """
    env = os.environ.get(BPE_ENV_VAR)
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"${BPE_ENV_VAR}={env} is not a file")
        return Path(env)
    for name in BPE_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / BPE_FILENAME
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{BPE_FILENAME} not found: set ${BPE_ENV_VAR} to its path, or run "
        "`pip install --no-deps clip-anytorch==2.6.0` (the wheel ships it; --no-deps keeps torchvision out)"
    )


def build_clip_tokenizer(
    out_dir: str | os.PathLike,
    model_max_length: int = 77,
    bpe_gz_path: str | os.PathLike | None = None,
):
    """Build the OpenAI CLIP tokenizer from the BPE file and save it as a complete tokenizer folder.

    Writes vocab.json/merges.txt (see `bpe_vocab_to_files`), then the tokenizer's own `save_pretrained` files
    (tokenizer.json, tokenizer_config.json, ...), so `AutoTokenizer.from_pretrained(out_dir)` works offline.
    `model_max_length` is CLIP's 77 text positions by default (FG-CLIP's long captions use 248).
    Returns the tokenizer (transformers' `CLIPTokenizer`, backed by `tokenizers`).
    """
    from transformers import CLIPTokenizer

    if model_max_length < 2:
        raise ValueError(f"model_max_length={model_max_length}: needs room for the start and end tokens")
    bpe = Path(bpe_gz_path) if bpe_gz_path is not None else find_bpe_vocab()
    vocab_path, merges_path = bpe_vocab_to_files(bpe, out_dir)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    merges = read_bpe_merges(bpe)
    # vocab=/merges= take the data itself: the old vocab_file=/merges_file= keywords are ignored by transformers 5
    # and silently give a 3-token tokenizer.
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )
    if len(tokenizer) != VOCAB_SIZE:
        raise ValueError(f"built a tokenizer with {len(tokenizer)} tokens, expected {VOCAB_SIZE}")
    tokenizer.save_pretrained(out_dir)
    # save_pretrained may rewrite vocab.json/merges.txt in its own layout: keep the Hub-identical files.
    bpe_vocab_to_files(bpe, out_dir)
    return tokenizer


__all__ = [
    "BPE_ENV_VAR",
    "VOCAB_SIZE",
    "bpe_vocab_to_files",
    "build_clip_tokenizer",
    "bytes_to_unicode",
    "find_bpe_vocab",
]
