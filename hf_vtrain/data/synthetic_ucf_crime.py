"""A synthetic UCF-Crime corpus in the official layout plus FG-CLIP-style training records, for tests and CPU demos.

Normal videos are a drifting low-contrast texture with a few grey "people" blobs; an anomalous video adds, over part
of its length, one event per class with its own colour, shape and motion (a flickering red-orange fire blob for
Arson, two blobs colliding rapidly for Fighting, ...), always inside the keyframe boxes of its training record.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .hard_negatives import add_hard_negatives

from .synthetic import (
    PARAMS_FILE,
    moving_background,
    check_decodable,
    build_corpus,
    default_kwargs,
    preflight,
    read_params,
    write_mp4,
)

# Bump when the generated content changes, so `ensure_synthetic_ucf_crime` regenerates stale corpora.
UCF_CRIME_FORMAT_VERSION = 3  # 3: hard negatives from data/hard_negatives.py

# The 13 official anomaly classes (folder names of the release), alphabetical.
UCF_CRIME_ANOMALY_CLASSES = (
    "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents", "Robbery",
    "Shooting", "Shoplifting", "Stealing", "Vandalism",
)  # fmt: skip

VIDEO_DIR = "videos"
TRAIN_LIST_FILE = "Anomaly_Train.txt"
TEST_LIST_FILE = "Anomaly_Test.txt"
ANNOTATION_FILE = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
TRAIN_JSON_FILE = "ucf_fgclip_train.json"
TRANSLATION_FILE = "ucf_fgclip_translations.json"
TRAIN_NORMAL_DIR = "Training_Normal_Videos_Anomaly"
TEST_NORMAL_DIR = "Testing_Normal_Videos_Anomaly"

_ALPHA = 0.9  # events almost hide the background
_PEOPLE_ALPHA = 0.6

# Region styles: shape, colour (RGB), alternate colour (every 2 frames, None: steady), motion, size (max radius as
# a fraction of the short side), amplitude of the local motion (same unit), and the caption's words.
_COLOUR_WORDS = {
    "magenta": (225, 40, 200), "blue": (40, 60, 240), "white": (245, 245, 245), "red": (230, 35, 20),
    "orange": (250, 140, 20), "yellow": (240, 220, 30), "grey": (150, 150, 160), "purple": (90, 20, 120),
    "green": (35, 205, 60), "cyan": (35, 215, 215), "black": (15, 15, 15),
}  # fmt: skip


def _region(shape, colour, motion, size, amp, caption, colour2=None):
    return {"shape": shape, "colour": colour, "colour2": colour2, "motion": motion, "size": size, "amp": amp,
            "caption": caption}  # fmt: skip


# Per class: the event noun (as in "a video of arson"), a description for the global caption and 1-2 regions.
# Two-region events are pairs side by side ("collide" moves them towards each other and back).
_EVENTS = {
    "Abuse": ("abuse", "a magenta square shakes violently next to a grey figure",
              [_region("square", "magenta", "jitter", 0.13, 0.05, "a magenta square shaking violently"),
               _region("disc", "grey", "still", 0.12, 0.0, "a grey figure standing still")]),
    "Arrest": ("an arrest", "a flashing blue light moves together with a white figure",
               [_region("disc", "blue", "orbit", 0.12, 0.04, "a flashing blue and white light", "white"),
                _region("square", "white", "still", 0.11, 0.0, "a white square figure")]),
    "Arson": ("arson", "a flickering red-orange fire blob burns in the scene",
              [_region("disc", "red", "flicker", 0.17, 0.0, "a flickering red-orange fire blob", "orange")]),
    "Assault": ("assault", "a yellow diamond lunges again and again at a grey figure",
                [_region("diamond", "yellow", "collide", 0.12, 0.07, "a yellow diamond lunging forward"),
                 _region("disc", "grey", "still", 0.12, 0.0, "a grey figure being hit")]),
    "Burglary": ("burglary", "a dark purple square creeps slowly across the scene",
                 [_region("square", "purple", "still", 0.15, 0.0, "a dark purple square creeping slowly")]),
    "Explosion": ("an explosion", "a bright yellow-white ring bursts outwards",
                  [_region("ring", "yellow", "expand", 0.22, 0.0, "a bright yellow-white ring expanding",
                           "white")]),
    "Fighting": ("fighting", "a red disc and a green disc collide rapidly again and again",
                 [_region("disc", "red", "collide", 0.12, 0.08, "a red disc colliding rapidly"),
                  _region("disc", "green", "collide", 0.12, 0.08, "a green disc colliding rapidly")]),
    "RoadAccidents": ("a road accident", "a white car-like rectangle races along and swerves",
                      [_region("rect", "white", "jitter", 0.16, 0.03, "a white car-like rectangle racing")]),
    "Robbery": ("robbery", "a cyan disc circles around a black square",
                [_region("disc", "cyan", "orbit", 0.11, 0.06, "a cyan disc circling fast"),
                 _region("square", "black", "still", 0.11, 0.0, "a black square standing still")]),
    "Shooting": ("shooting", "a white and yellow cross flashes repeatedly",
                 [_region("cross", "white", "still", 0.17, 0.0, "a flashing white and yellow cross", "yellow")]),
    "Shoplifting": ("shoplifting", "a small green square pulses while drifting",
                    [_region("square", "green", "pulse", 0.12, 0.0, "a pulsing green square")]),
    "Stealing": ("stealing", "an orange diamond jitters nervously",
                 [_region("diamond", "orange", "jitter", 0.13, 0.04, "an orange diamond jittering nervously")]),
    "Vandalism": ("vandalism", "a black and yellow checkered patch flickers",
                  [_region("checker", "black", "still", 0.16, 0.0, "a flickering black and yellow checkered patch",
                           "yellow")]),
}  # fmt: skip

# Chinese captions (with an English translation) used for `num_chinese_captions`, one per class.
_CHINESE = {
    "Abuse": ("虐待：一个品红色的方块在灰色人影旁剧烈抖动", "abuse: a magenta square shakes violently next to a grey figure"),
    "Arrest": ("逮捕：闪烁的蓝色灯光和白色人影一起移动", "an arrest: a flashing blue light moves with a white figure"),
    "Arson": ("纵火：画面中有一团闪烁的红橙色火焰", "arson: a flickering red-orange fire burns in the scene"),
    "Assault": ("袭击：黄色菱形反复冲向灰色人影", "assault: a yellow diamond lunges again and again at a grey figure"),
    "Burglary": ("入室盗窃：深紫色方块缓慢移动", "burglary: a dark purple square creeps slowly"),
    "Explosion": ("爆炸：明亮的黄白色圆环向外扩散", "an explosion: a bright yellow-white ring bursts outwards"),
    "Fighting": ("打架：红色圆形和绿色圆形快速相撞", "fighting: a red disc and a green disc collide rapidly"),
    "RoadAccidents": ("交通事故：白色的车形矩形疾驰并转向", "a road accident: a white car-like rectangle races and swerves"),
    "Robbery": ("抢劫：青色圆形围绕黑色方块转圈", "robbery: a cyan disc circles around a black square"),
    "Shooting": ("枪击：白黄相间的十字反复闪烁", "shooting: a white and yellow cross flashes repeatedly"),
    "Shoplifting": ("商店行窃：绿色小方块一边漂移一边跳动", "shoplifting: a small green square pulses while drifting"),
    "Stealing": ("偷窃：橙色菱形紧张地抖动", "stealing: an orange diamond jitters nervously"),
    "Vandalism": ("破坏公物：黑黄格子图案不停闪烁", "vandalism: a black and yellow checkered patch flickers"),
}  # fmt: skip

_ANOMALY_TEMPLATES = (
    "a video of {noun}: {desc}.",
    "surveillance footage of {noun}; {desc} while people walk by.",
    "{desc}. this street camera recording shows {noun}.",
    "in a street scene {desc}, which is {noun}.",
)
# free_captions: what is seen, in other words than the prompts' ("a video of {noun}", "normal activity")
_FREE_ANOMALY_TEMPLATES = (
    "{desc}.",
    "in the street {desc} while people walk by.",
    "the camera shows that {desc}.",
)
_FREE_NORMAL_TEMPLATES = (
    "a quiet street, a few grey figures drifting slowly by.",
    "people walk calmly through an ordinary scene.",
    "pedestrians pass through the frame at an easy pace.",
)
_NORMAL_TEMPLATES = (
    "a video of normal activity: a quiet street with nothing unusual.",
    "a quiet street with nothing unusual, a few people drifting slowly by.",
    "surveillance footage of an ordinary scene, people walking calmly.",
    "a normal day: pedestrians pass through the frame and nothing happens.",
    "an uneventful view of a street with grey figures strolling.",
    "normal activity on a street, nobody does anything unusual.",
)

# ----------------------------------------------------------------------------------------------- drawing


def _shape_mask(shape: str, cx: float, cy: float, r: float, t: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Bool (H, W) mask of one region's shape centred at (cx, cy) with size r (pixels), at frame offset t."""
    dx, dy = xx - cx, yy - cy
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        bar = max(0.3 * r, 1.5)
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        return inside & ((np.abs(dx) <= bar) | (np.abs(dy) <= bar))
    if shape == "rect":  # car-like: wide and low
        return (np.abs(dx) <= r) & (np.abs(dy) <= 0.55 * r)
    if shape == "checker":
        cell = max(r / 2, 2.0)
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        parity = (np.floor((dx + r) / cell) + np.floor((dy + r) / cell) + (t // 2)) % 2
        return inside & (parity == 0)
    raise ValueError(f"unknown shape {shape!r}")


def _local_motion(motion: str, t: int, amp: float, fps: float, side: int, jitter: np.ndarray):
    """(dx, dy, size factor) of a region at frame offset t of its event; |dx|, |dy| <= amp and factor <= 1."""
    if motion == "still":
        return 0.0, 0.0, 1.0
    if motion == "jitter":
        return float(jitter[t, 0]) * amp, float(jitter[t, 1]) * amp, 1.0
    if motion == "orbit":
        angle = 2 * np.pi * t / (0.8 * fps)
        return amp * np.cos(angle), amp * np.sin(angle), 1.0
    if motion == "collide":  # towards the partner (side=+1 moves right) and back, period 0.4 s
        return side * amp * np.cos(2 * np.pi * t / (0.4 * fps)), 0.0, 1.0
    if motion == "flicker":
        return 0.0, 0.0, 0.75 + 0.25 * abs(np.sin(2 * np.pi * t / (0.3 * fps)))
    if motion == "pulse":
        return 0.0, 0.0, 0.7 + 0.3 * abs(np.sin(2 * np.pi * t / (0.6 * fps)))
    if motion == "expand":  # grows to full size over the first 60% of the event, repeats every 2 s
        period = max(int(2 * fps), 2)
        return 0.0, 0.0, 0.35 + 0.65 * min(1.0, (t % period) / (0.6 * period))
    raise ValueError(f"unknown motion {motion!r}")


def _interp_path(keyframes: list[list[float]], frame: int) -> tuple[float, float]:
    """Base position (pixels) at `frame`, linear between keyframes [frame, cx, cy]."""
    kf = np.asarray(keyframes, dtype=np.float64)
    return float(np.interp(frame, kf[:, 0], kf[:, 1])), float(np.interp(frame, kf[:, 0], kf[:, 2]))


def _make_video(spec: dict, path: str, height: int, width: int, fps: int) -> None:
    rng = np.random.default_rng(spec["draw_seed"])
    n = spec["num_frames"]
    background = moving_background(rng, n, height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    people = spec["people"]
    jitters = [rng.uniform(-1, 1, size=(max(e["end"] - e["start"], 1), 2)) for e in spec["events"]]

    def frames(lo: int, hi: int):
        out = background[lo:hi].copy()
        for k, frame in enumerate(range(lo, hi)):
            img = out[k]
            for p in people:  # grey "people": vertical ellipses drifting horizontally, wrapping around
                cx = (p["x0"] + p["speed"] * frame) % (width + 2 * p["rx"]) - p["rx"]
                mask = ((xx - cx) / p["rx"]) ** 2 + ((yy - p["y"]) / p["ry"]) ** 2 <= 1.0
                img[mask] = (1 - _PEOPLE_ALPHA) * img[mask] + _PEOPLE_ALPHA * np.asarray(p["colour"], np.float32)
            for event, jitter in zip(spec["events"], jitters):
                if not event["start"] <= frame < event["end"]:
                    continue
                t = frame - event["start"]
                for region in event["regions"]:
                    style = region["style"]
                    bx, by = _interp_path(region["path"], frame)
                    dx, dy, factor = _local_motion(style["motion"], t, region["amp_px"], fps, region["side"], jitter)
                    mask = _shape_mask(style["shape"], bx + dx, by + dy, region["size_px"] * factor, t, yy, xx)
                    colour = style["colour"]
                    if style["colour2"] is not None and (t // 2) % 2:
                        colour = style["colour2"]
                    rgb = np.asarray(_COLOUR_WORDS[colour], np.float32)
                    img[mask] = (1 - _ALPHA) * img[mask] + _ALPHA * rgb
        return np.clip(out, 0, 255).astype(np.uint8)

    write_mp4(path, frames, n, height, width, fps)
    check_decodable(path, n)  # the loader's frame counts must be the decoded ones


# ----------------------------------------------------------------------------------------------- planning


def _params(
    num_train_normal, num_train_anomalous, num_test_normal, num_test_anomalous, anomaly_classes, fps, height,
    width, min_duration, max_duration, clip_duration, num_chinese_captions, num_region_negatives, seed,
    free_captions=False,
) -> dict:  # fmt: skip
    classes = [str(c) for c in anomaly_classes]
    unknown = [c for c in classes if c not in UCF_CRIME_ANOMALY_CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"anomaly_classes must be distinct names among {UCF_CRIME_ANOMALY_CLASSES}, got {classes}")
    counts = (num_train_normal, num_train_anomalous, num_test_normal, num_test_anomalous)
    if min(counts) < 0:
        raise ValueError(f"video counts must be >= 0, got {counts}")
    if num_train_normal + num_train_anomalous < 1 or num_test_normal + num_test_anomalous < 1:
        raise ValueError("need at least one training and one test video")
    if height % 2 or width % 2:
        raise ValueError(f"height and width must be even for yuv420p, got {height}x{width}")
    if not 2.0 <= min_duration <= max_duration:
        raise ValueError(f"need 2 <= min_duration <= max_duration (seconds), got {min_duration}, {max_duration}")
    if not 0 < clip_duration[0] <= clip_duration[1]:
        raise ValueError(f"clip_duration must be (lo, hi) seconds with 0 < lo <= hi, got {clip_duration}")
    if not 0 <= num_chinese_captions <= num_train_anomalous:
        raise ValueError(f"num_chinese_captions must be in [0, num_train_anomalous], got {num_chinese_captions}")
    if num_region_negatives < 0:
        raise ValueError(f"num_region_negatives must be >= 0, got {num_region_negatives}")
    return {
        "corpus": "ucf_crime",
        "format_version": UCF_CRIME_FORMAT_VERSION,
        "num_train_normal": int(num_train_normal),
        "num_train_anomalous": int(num_train_anomalous),
        "num_test_normal": int(num_test_normal),
        "num_test_anomalous": int(num_test_anomalous),
        "anomaly_classes": classes,
        "fps": int(fps),
        "height": int(height),
        "width": int(width),
        "min_duration": float(min_duration),
        "max_duration": float(max_duration),
        "clip_duration": [float(clip_duration[0]), float(clip_duration[1])],
        "num_chinese_captions": int(num_chinese_captions),
        "num_region_negatives": int(num_region_negatives),
        "seed": int(seed),
        **({"free_captions": True} if free_captions else {}),  # absent when off: earlier corpora stay valid
    }


def _plan_event(rng, cls: str, start: int, end: int, height: int, width: int) -> dict:
    """Regions of one event: a base path through 3-5 keyframes (the boxes' keyframes) plus bounded local motion.

    The drawn shape of a region always lies inside [base - extent, base + extent] with extent = size + amplitude
    (+1 px), and the base moves linearly between keyframes, so the linearly interpolated keyframe boxes contain it
    on every frame of the event.
    """
    short = min(height, width)
    _, _, styles = _EVENTS[cls]
    regions = [{"style": s, "size_px": s["size"] * short, "amp_px": s["amp"] * short, "side": 0} for s in styles]
    for r in regions:
        r["extent"] = r["size_px"] + r["amp_px"] + 1.0
    # A pair sits side by side; "collide" moves each towards the other so that they touch at the closest point.
    if len(regions) == 2:
        a, b = regions
        a["offset"] = -(a["size_px"] + a["amp_px"])
        b["offset"] = b["size_px"] + b["amp_px"]
        a["side"], b["side"] = 1, -1
        half_w = max(abs(a["offset"]) + a["extent"], abs(b["offset"]) + b["extent"])
    else:
        regions[0]["offset"] = 0.0
        half_w = regions[0]["extent"]
    half_h = max(r["extent"] for r in regions)
    # Keep events in the middle of the frame: a centre crop of the short side keeps the central square.
    lo_x = max(half_w + 1, (width - short) / 2 + half_w * 0.5)
    hi_x = min(width - half_w - 1, (width + short) / 2 - half_w * 0.5)
    lo_y, hi_y = half_h + 1, height - half_h - 1
    if hi_x < lo_x:
        lo_x = hi_x = width / 2
    if hi_y < lo_y:
        lo_y = hi_y = height / 2
    num_keys = int(rng.integers(3, 6))
    key_frames = np.unique(np.round(np.linspace(start, end - 1, num_keys)).astype(int)).tolist()
    centres = [(float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))) for _ in key_frames]
    for r in regions:
        r["path"] = [[f, cx + r["offset"], cy] for f, (cx, cy) in zip(key_frames, centres)]
        r["boxes"] = [
            {"frame": f, "bbox": [round((x - r["extent"]) / width, 4), round((y - r["extent"]) / height, 4),
                                  round((x + r["extent"]) / width, 4), round((y + r["extent"]) / height, 4)]}
            for f, x, y in r["path"]
        ]  # fmt: skip
    return {"class": cls, "start": int(start), "end": int(end), "regions": regions}


def _plan(params: dict) -> list[dict]:
    """Per-video plan, a pure function of the params: name, folder, split, frames, events, people, draw seed."""
    fps, height, width = params["fps"], params["height"], params["width"]
    classes = params["anomaly_classes"]
    videos = []
    class_counter = {c: 0 for c in classes}
    normal_counter = 0
    groups = [
        ("train", False, params["num_train_normal"]),
        ("train", True, params["num_train_anomalous"]),
        ("test", False, params["num_test_normal"]),
        ("test", True, params["num_test_anomalous"]),
    ]
    for code, (split, anomalous, count) in enumerate(groups):
        for i in range(count):
            seq = np.random.SeedSequence([params["seed"], code, i])
            rng = np.random.default_rng(seq)
            n = max(int(round(rng.uniform(params["min_duration"], params["max_duration"]) * fps)), 2 * fps)
            if anomalous:
                cls = classes[i % len(classes)]
                class_counter[cls] += 1
                folder, name = cls, f"{cls}{class_counter[cls]:03d}_x264"
            else:
                cls = "Normal"
                normal_counter += 1
                folder = TRAIN_NORMAL_DIR if split == "train" else TEST_NORMAL_DIR
                name = f"Normal_Videos_{normal_counter:03d}_x264"
            people = [
                {"x0": float(rng.uniform(0, width)), "y": float(rng.uniform(0.3, 0.75) * height),
                 "speed": float(rng.uniform(0.15, 0.5) * rng.choice([-1, 1])),
                 "rx": float(0.045 * min(height, width) + 1), "ry": float(0.15 * min(height, width) + 1),
                 "colour": [float(v) for v in rng.uniform(70, 140, size=3)]}
                for _ in range(int(rng.integers(2, 5)))
            ]  # fmt: skip
            events = []
            if anomalous:
                length = int(round(rng.uniform(0.3, 0.5) * n))
                two = split == "test" and rng.uniform() < 0.4 and 2 * length + 3 <= n
                if two:  # two events of the same class (the annotation file has two spans)
                    gaps = np.sort(rng.integers(1, n - 2 * length, size=2))  # cut points of the free frames
                    s1 = int(gaps[0])
                    s2 = s1 + length + max(int(gaps[1] - gaps[0]), 1)
                    spans = [(s1, s1 + length), (s2, min(s2 + length, n))]
                else:
                    s = int(rng.integers(1, n - length))
                    spans = [(s, s + length)]
                events = [_plan_event(rng, cls, s, e, height, width) for s, e in spans if e - s >= 2]
            videos.append({
                "name": name, "folder": folder, "split": split, "class": cls, "num_frames": n, "people": people,
                "events": events, "draw_seed": int(seq.generate_state(1)[0]), "rng": rng,
            })  # fmt: skip
    return videos


def _records(plan: list[dict], params: dict) -> tuple[list[dict], dict[str, str]]:
    """FG-CLIP-format video records (README, "UCF-Crime") for the training videos, and the Chinese -> English translations used."""
    fps = params["fps"]
    records, translations = [], {}
    chinese_left = params["num_chinese_captions"]
    free = params.get("free_captions", False)
    anomaly_templates = _FREE_ANOMALY_TEMPLATES if free else _ANOMALY_TEMPLATES
    normal_templates = _FREE_NORMAL_TEMPLATES if free else _NORMAL_TEMPLATES
    for video in plan:
        if video["split"] != "train":
            continue
        rng = video["rng"]
        rel = f"{video['folder']}/{video['name']}.mp4"
        if video["class"] == "Normal":  # cut into timestamped clips without boxes
            t, total = 0.0, video["num_frames"] / fps
            lo, hi = params["clip_duration"]
            while total - t >= min(lo, total):
                length = min(float(rng.uniform(lo, hi)), total - t)
                end = min(round(t + length, 3), np.floor(total * 1000) / 1000)
                records.append({
                    "video": rel, "global_caption": normal_templates[int(rng.integers(len(normal_templates)))],
                    "region_captions": [], "box_infos": [], "timestamps": [round(t, 3), end],
                })  # fmt: skip
                t = end
            continue
        event = video["events"][0]
        noun, desc, _ = _EVENTS[video["class"]]
        caption = anomaly_templates[int(rng.integers(len(anomaly_templates)))].format(noun=noun, desc=desc)
        if chinese_left > 0:
            chinese, english = _CHINESE[video["class"]]
            caption = chinese
            translations[chinese] = english
            chinese_left -= 1
        whole = rng.uniform() < 0.3  # some records span the whole video (timestamps null), as in the real data
        record = {
            "video": rel,
            "global_caption": caption,
            "region_captions": [r["style"]["caption"] for r in event["regions"]],
            "box_infos": [r["boxes"] for r in event["regions"]],
            "timestamps": None if whole else [round(event["start"] / fps, 3), round(event["end"] / fps, 3)],
        }
        records.append(record)
    if params["num_region_negatives"]:  # the tool users run on their own records (scripts/make_hard_negatives.py)
        records, _ = add_hard_negatives(records, k=params["num_region_negatives"], seed=params["seed"])
    return records, translations


# ----------------------------------------------------------------------------------------------- writing


def make_synthetic_ucf_crime(
    root: str | os.PathLike,
    num_train_normal: int = 8,
    num_train_anomalous: int = 12,
    num_test_normal: int = 6,
    num_test_anomalous: int = 6,
    anomaly_classes: Sequence[str] = ("Abuse", "Arson", "Fighting"),
    fps: int = 15,
    height: int = 64,
    width: int = 96,
    min_duration: float = 8.0,
    max_duration: float = 14.0,
    clip_duration: tuple[float, float] = (3.0, 5.0),
    num_chinese_captions: int = 0,
    num_region_negatives: int = 4,
    seed: int = 0,
    free_captions: bool = False,
    num_workers: int | None = None,
) -> dict[str, str]:
    """Write a UCF-Crime corpus in the official layout under `root` and return its paths.

    Layout: `videos/<Class>/<Class>NNN_x264.mp4` (anomalous, training then test numbers),
    `videos/Training_Normal_Videos_Anomaly/Normal_Videos_NNN_x264.mp4`,
    `videos/Testing_Normal_Videos_Anomaly/Normal_Videos_NNN_x264.mp4` (normal numbers run on across both);
    `Anomaly_Train.txt` / `Anomaly_Test.txt` (one `<folder>/<file>.mp4` per line);
    `Temporal_Anomaly_Annotation_for_Testing_Videos.txt` (`<file>.mp4  <Class>  s1  e1  s2  e2`, frames,
    end-exclusive, -1 for none, class `Normal` for normal videos); `ucf_fgclip_train.json` (the FG-CLIP video-record schema: one
    record per anomalous training video with 1-2 regions whose keyframe boxes (absolute frame numbers, normalised
    xyxy) contain the event, `timestamps` the event's span in seconds or null for about 30% of them; each normal
    training video cut into `clip_duration` timestamped clips without regions; `region_negatives`: per region
    `num_region_negatives` hard-negative captions when > 0); with `num_chinese_captions` > 0 that many anomalous
    records get a Chinese global caption and `ucf_fgclip_translations.json` maps them to English; last
    `synthetic_params.json`. Anomalous videos cycle through `anomaly_classes` (a subset of the 13 official ones).
    With `free_captions` the captions describe what is seen in free words and never name a class or say "normal"
    (`_FREE_ANOMALY_TEMPLATES`, `_FREE_NORMAL_TEMPLATES`): the anomaly prompts' words appear in no caption.
    Deterministic for a seed. Built in a temporary directory next to `root` and renamed into place; an existing
    synthetic corpus at `root` is replaced, anything else there is refused.
    """
    params = _params(num_train_normal, num_train_anomalous, num_test_normal, num_test_anomalous, anomaly_classes,
                     fps, height, width, min_duration, max_duration, clip_duration, num_chinese_captions,
                     num_region_negatives, seed, free_captions)  # fmt: skip
    return _paths(build_corpus(root, params, _write, num_workers), params)


def _paths(root: Path, params: dict) -> dict[str, str]:
    paths = {
        "root": str(root),
        "video_dir": str(root / VIDEO_DIR),
        "train_json": str(root / TRAIN_JSON_FILE),
        "train_list": str(root / TRAIN_LIST_FILE),
        "test_list": str(root / TEST_LIST_FILE),
        "test_annotation": str(root / ANNOTATION_FILE),
        "params_path": str(root / PARAMS_FILE),
    }
    if params.get("num_chinese_captions"):
        paths["translation_file"] = str(root / TRANSLATION_FILE)
    return paths


def _write(out: Path, params: dict, num_workers: int | None) -> None:
    plan = _plan(params)
    fps, height, width = params["fps"], params["height"], params["width"]
    for folder in sorted({v["folder"] for v in plan}):
        (out / VIDEO_DIR / folder).mkdir(parents=True)
    preflight(out, height, width, fps)
    records, translations = _records(plan, params)  # before drawing: it uses the videos' planning generators
    workers = num_workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # numpy and x264 release the GIL
        list(pool.map(
            lambda v: _make_video(v, str(out / VIDEO_DIR / v["folder"] / f"{v['name']}.mp4"), height, width, fps),
            plan,
        ))  # fmt: skip

    # Anomalous videos first (class folders alphabetically), then the normal ones, as in the official lists.
    plan_order = sorted(plan, key=lambda v: (v["class"] == "Normal", v["folder"], v["name"]))

    def listing(split):
        return "".join(f"{v['folder']}/{v['name']}.mp4\n" for v in plan_order if v["split"] == split)

    (out / TRAIN_LIST_FILE).write_text(listing("train"))
    (out / TEST_LIST_FILE).write_text(listing("test"))
    lines = []
    for v in plan_order:
        if v["split"] != "test":
            continue
        spans = [(e["start"], e["end"]) for e in v["events"]][:2]
        spans += [(-1, -1)] * (2 - len(spans))
        lines.append(f"{v['name']}.mp4  {v['class']}  " + "  ".join(f"{s}  {e}" for s, e in spans) + "\n")
    (out / ANNOTATION_FILE).write_text("".join(lines))
    with open(out / TRAIN_JSON_FILE, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=1, ensure_ascii=False)
    if params["num_chinese_captions"]:
        with open(out / TRANSLATION_FILE, "w", encoding="utf-8") as f:
            json.dump(translations, f, indent=1, ensure_ascii=False)
    # Written last: its presence marks a complete corpus.
    with open(out / PARAMS_FILE, "w") as f:
        json.dump(params, f, indent=1, sort_keys=True)


def ensure_synthetic_ucf_crime(root: str | os.PathLike, **params) -> dict[str, str]:
    """Reuse the synthetic corpus at `root` when its stored parameters match `params`, else (re)generate it."""
    num_workers = params.pop("num_workers", None)
    wanted = _params(**{**default_kwargs(make_synthetic_ucf_crime), **params})
    root = Path(root).absolute()
    if read_params(root) == wanted:
        return _paths(root, wanted)
    return make_synthetic_ucf_crime(root, num_workers=num_workers, **params)


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> dict:
    defaults = default_kwargs(make_synthetic_ucf_crime)
    parser = argparse.ArgumentParser(prog="python -m hf_vtrain.data.synthetic_ucf_crime", description=__doc__)
    parser.add_argument("out_dir")
    for name in ("num_train_normal", "num_train_anomalous", "num_test_normal", "num_test_anomalous", "fps",
                 "height", "width", "num_chinese_captions", "num_region_negatives", "seed"):  # fmt: skip
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=defaults[name])
    parser.add_argument("--min-duration", type=float, default=defaults["min_duration"])
    parser.add_argument("--max-duration", type=float, default=defaults["max_duration"])
    parser.add_argument("--clip-duration", type=float, nargs=2, default=defaults["clip_duration"])
    parser.add_argument("--anomaly-classes", nargs="+", default=list(defaults["anomaly_classes"]),
                        choices=UCF_CRIME_ANOMALY_CLASSES)  # fmt: skip
    parser.add_argument("--force", action="store_true", help="regenerate even when matching parameters are stored")
    args = vars(parser.parse_args(argv))
    out_dir, force = args.pop("out_dir"), args.pop("force")
    args["clip_duration"] = tuple(args["clip_duration"])
    args["anomaly_classes"] = tuple(args["anomaly_classes"])
    paths = (make_synthetic_ucf_crime if force else ensure_synthetic_ucf_crime)(out_dir, **args)
    print(json.dumps(paths, indent=1))
    return paths


if __name__ == "__main__":
    main()
