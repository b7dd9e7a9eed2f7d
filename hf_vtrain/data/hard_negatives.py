"""Hard-negative captions for FG-CLIP-format video records: K per region caption (FG-CLIP uses 10, an 11-way choice),
written into the records' `region_negatives`. FG-CLIP builds its negatives by changing the attributes and objects of
a region description; here one or two content words of the caption (not stop words) are swapped for content words
of region captions of other classes, preferably words that stand in the same place among those captions' content
words (the j-th content word of "a red disc spinning" is swapped for j-th content words of other captions: colour for
colour, object for object, when captions share a form), so a negative keeps the caption's form and differs where it
matters. A user's own list (caption -> negatives) takes precedence.

    python scripts/make_hard_negatives.py ucf_fgclip_train.json --out ucf_fgclip_train_negatives.json [--k 10]
        [--negatives-file my_negatives.json] [--seed 0] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from collections import Counter

from .common import write_json_atomic

STOP_WORDS = frozenset("""
a an the of in on at to from by with and or but is are was were be been being it its this that these those there here
as into onto over under near next behind front left right up down out off than then while his her their them they he
she him one two some any each every other another very more most less so not no yes who whom which what where when
""".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
# Swap words when the records offer none (one class, one caption): attributes and objects of surveillance scenes.
FALLBACK_WORDS = tuple("""
red blue green yellow black white grey brown orange purple pink dark bright small large tall short old young
man woman child person car truck bicycle motorcycle bag box door window shop street wall table chair phone bottle
running walking standing sitting falling jumping pushing pulling holding throwing kicking climbing burning breaking
""".split())


def content_words(text: str) -> list[re.Match]:
    return [m for m in _WORD.finditer(text) if m.group(0).lower() not in STOP_WORDS and len(m.group(0)) > 1]


def _swap(text: str, match: re.Match, word: str) -> str:
    original = match.group(0)
    word = word.capitalize() if original[0].isupper() else word
    return text[: match.start()] + word + text[match.end():]


def make_negatives(caption: str, pool: dict[int, list[str]], k: int, rng: random.Random,
                   tries_per_tier: int = 200) -> list[str]:
    """`k` distinct negatives of `caption`, each with one (then two) content words replaced by words it does not
    contain. The words come, in widening tiers until k are found, from the same content-word place of the pool
    (`pool[j]`), from any place of the pool, then from FALLBACK_WORDS as well. Fewer than k only when the caption has
    no content word."""
    slots = content_words(caption)
    own = {m.group(0).lower() for m in slots}
    anywhere = sorted({w for words in pool.values() for w in words} - own)
    widest = sorted(set(anywhere) | (set(FALLBACK_WORDS) - own))
    tiers = [{j: sorted(set(pool.get(j, ())) - own) or anywhere or widest for j in range(len(slots))},
             {j: anywhere or widest for j in range(len(slots))},
             {j: widest for j in range(len(slots))}]
    out: list[str] = []
    if not slots:
        return out
    for words in tiers:
        for attempt in range(tries_per_tier):
            swaps = 1 if attempt < tries_per_tier // 2 or len(slots) < 2 else 2
            text = caption
            chosen = sorted(rng.sample(range(len(slots)), min(swaps, len(slots))), key=lambda j: -slots[j].start())
            for j in chosen:
                text = _swap(text, slots[j], rng.choice(words[j]))
            if text != caption and text not in out:
                out.append(text)
                if len(out) == k:
                    return out
    return out


def add_hard_negatives(records: list[dict], k: int = 10, seed: int = 0, given: dict[str, list[str]] | None = None,
                       overwrite: bool = False, class_of=None) -> tuple[list[dict], dict]:
    """Records with `region_negatives` (K per region caption). The swap words of a record come from the region
    captions of records of other classes (`class_of(record)`, default: the folder the video is in, UCF-Crime's class
    folders such as Abuse/), or of every record when there is one class. Records that already have negatives keep
    them unless `overwrite`. Raises ValueError naming the captions that could not get K distinct negatives."""
    class_of = class_of or (lambda record: os.path.basename(os.path.dirname(str(record.get("video", "")).replace(
        "\\", "/"))))
    given = given or {}
    words_by_class: dict[str, dict[int, Counter]] = {}  # class -> content-word place -> words there
    for record in records:
        for caption in record.get("region_captions") or []:
            places = words_by_class.setdefault(class_of(record), {})
            for j, match in enumerate(content_words(str(caption))):
                places.setdefault(j, Counter())[match.group(0).lower()] += 1
    rng = random.Random(seed)
    out, short, counts = [], [], Counter()
    for i, record in enumerate(records):
        captions = record.get("region_captions") or []
        if not captions or (record.get("region_negatives") and not overwrite):
            out.append(record)
            counts["kept" if captions else "no regions"] += 1
            continue
        cls = class_of(record)
        sources = [places for c, places in words_by_class.items() if c != cls] or list(words_by_class.values())
        pool: dict[int, list[str]] = {}
        for places in sources:
            for j, words in places.items():
                pool.setdefault(j, []).extend(words)
        negatives = []
        for caption in captions:
            mine = list(given.get(caption, []))[:k]
            negs = mine if len(mine) == k else make_negatives(str(caption), pool, k, rng)
            if len(negs) < k:
                short.append(f"entry {i} ({record.get('video')}): region caption {caption!r} got {len(negs)} of {k}")
            negatives.append(negs)
            counts["from the list" if len(mine) == k else "generated"] += 1
        out.append({**record, "region_negatives": negatives})
    if short:
        raise ValueError(f"{len(short)} region caption(s) could not get {k} distinct hard negatives (too few content "
                         f"words, or too few captions of other classes): " + "; ".join(short[:5])
                         + ("; give them in --negatives-file" if short else ""))
    return out, dict(counts)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_json", help="FG-CLIP-format training records (a JSON list)")
    parser.add_argument("--out", required=True, help="where the records with region_negatives are written")
    parser.add_argument("--k", type=int, default=10, help="negatives per region caption (FG-CLIP: 10)")
    parser.add_argument("--negatives-file", help="JSON {region caption: [negatives, ...]}, used where it has k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace negatives the records already have")
    args = parser.parse_args(argv)
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    with open(args.train_json, encoding="utf-8") as handle:
        records = json.load(handle)
    if not isinstance(records, list):
        raise ValueError(f"{args.train_json}: expected a JSON list of records")
    given = None
    if args.negatives_file:
        with open(args.negatives_file, encoding="utf-8") as handle:
            given = json.load(handle)
        if not isinstance(given, dict):
            raise ValueError(f"{args.negatives_file}: expected a JSON object {{caption: [negatives]}}")
    out, counts = add_hard_negatives(records, args.k, args.seed, given, args.overwrite)
    write_json_atomic(args.out, out, indent=1)
    print(f"{args.out}: {len(out)} records; region captions: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return counts
