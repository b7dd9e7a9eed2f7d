"""Task `det`, drone detection on FRED's RGB and event frames with RT-DETR (transformers' RTDetrForObjectDetection).
The recipe keys of the model (DetModelArguments; the data keys are data/fred's DetDataArguments, the training keys
VTrainingArguments), how the model is built (a published or saved checkpoint, its class heads sized for the corpus's
classes; or a new one from its config; widened to 6 input channels for `modality: rgb_event`) and the setup that
hands run.py its Trainer's pieces.

Why RT-DETR (not D-FINE): on this CPU a tiny RT-DETR from random weights reaches mAP@0.5 0.6 on a synthetic drone
in about 300 steps of batch 8 at 128 px, with its denoising queries and IoU-aware classification; D-FINE's
distribution-refinement heads add losses (FGL, DDF) that need more steps and a teacher layer to pay off. The
published RT-DETR checkpoints (PekingU/rtdetr_r18vd, ... on the Hub) load through `model_name_or_path`.

The RT-DETR backbone freezes its BatchNorms by default (`freeze_backbone_batch_norms`); here they are ordinary
BatchNorms, and the phases decide what is frozen (`param_groups` with lr 0) and `freeze_norm_stats` what keeps its
statistics.

Predict (`python -m hf_vtrain.predict --model RUN VIDEO_OR_FRAME_FOLDER --output OUT`): the boxes of every frame as
COCO-style JSON and an MP4 with the boxes drawn, for a video or a folder of frames, read as evaluation reads a frame.
For `modality: rgb_event` it reads a folder of RGB frames and pairs each with the event frame nearest in time
(FRED's `Event/Frames` beside `RGB/`, or `--event_frames`), as the loader does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import json
import os

from ..data import fred
from ..data.common import write_json_atomic
from ..data.fred import DetDataArguments, collate_det, load_fred, validate_fred
from ..parser import RecipeError
from ..pretrained_sources import check_pretrained_source, loading
from ..trainers.arguments import VTrainingArguments
from ..trainers.det import DetTrainer
from .common import (PredictRuntime, TaskPredictor, TaskRun, TaskSpec, VideoPlan, check_config_overrides,
                     config_errors, prefetched)

logger = logging.getLogger(__name__)

# A small RT-DETR for a CPU: ResNet backbone of bottlenecks (one per stage), 64-wide hybrid encoder, 2 decoder layers.
TINY_BACKBONE = {"embedding_size": 16, "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1],
                 "layer_type": "bottleneck"}


@dataclass
class DetModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A published or saved RT-DETR (folder or hub id, e.g. PekingU/rtdetr_r18vd); "
                                        "none: a new one from model_config_overrides."},
    )
    model_config_overrides: dict = field(default_factory=dict, metadata={"help": "RTDetrConfig fields."})
    backbone_config_overrides: dict = field(
        default_factory=dict, metadata={"help": "RTDetrResNetConfig fields of a new model's backbone."}
    )
    max_detections: int = field(default=100, metadata={"help": "Detections kept per frame (COCO's maxDets)."})
    map_during_training: bool = field(
        default=True, metadata={"help": "false: evaluations during training compute the loss only (no mAP); the "
                                        "final evaluation computes mAP (the users' switch that saves the time)."},
    )

    def __post_init__(self):
        from transformers import RTDetrConfig, RTDetrResNetConfig

        check_config_overrides("model_config_overrides", self.model_config_overrides, RTDetrConfig)
        check_config_overrides("backbone_config_overrides", self.backbone_config_overrides, RTDetrResNetConfig)
        clash = sorted(set(self.model_config_overrides) & {"num_labels", "id2label", "label2id", "backbone_config"})
        if clash:
            raise ValueError(f"model_config_overrides sets {clash}: the classes come from the corpus's class_names "
                             f"and the backbone from backbone_config_overrides")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {self.max_detections}")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def new_config(model_args: DetModelArguments, data_args: DetDataArguments):
    from transformers import RTDetrConfig, RTDetrResNetConfig

    names = list(data_args.class_names)
    with config_errors("backbone_config_overrides"):
        backbone = RTDetrResNetConfig(**{"out_features": ["stage2", "stage3", "stage4"],
                                         **model_args.backbone_config_overrides, "num_channels": data_args.in_channels})
    with config_errors("model_config_overrides"):
        return RTDetrConfig(**{"encoder_in_channels": backbone.hidden_sizes[-3:], "freeze_backbone_batch_norms": False,
                               **model_args.model_config_overrides},
                            backbone_config=backbone, id2label=dict(enumerate(names)),
                            label2id={n: i for i, n in enumerate(names)})


def check_queries_fit(config, image_size: int, where: str) -> None:
    """RT-DETR picks its num_queries from the encoder's positions (one per feature-map pixel at feat_strides): a frame
    too small for them fails inside the first forward (torch.topk's 'selected index k out of range')."""
    sides = [math.ceil(image_size / stride) for stride in config.feat_strides]
    positions = sum(side * side for side in sides)
    if positions < config.num_queries:
        need = next(size for size in range(32 * math.ceil(image_size / 32), 100 * image_size + 64, 32)  # multiples
                    if sum(math.ceil(size / st) ** 2 for st in config.feat_strides) >= config.num_queries)  # of 32
        raise RecipeError(f"image_size {image_size}: {where} has {positions} encoder positions "
                          f"({' + '.join(f'{n}x{n}' for n in sides)} at strides {list(config.feat_strides)}) for "
                          f"num_queries {config.num_queries}; use image_size >= {need} or fewer queries "
                          f"(model_config_overrides.num_queries)")


def check_recipe(model_args: DetModelArguments, data_args: DetDataArguments) -> None:
    if not model_args.model_name_or_path:
        check_queries_fit(new_config(model_args, data_args), data_args.image_size, "the new RT-DETR")


def build_model(model_args: DetModelArguments, data_args: DetDataArguments):
    from ..models.rt_detr import RTDetrDetector, widen_input_channels

    names = list(data_args.class_names)
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        check_pretrained_source("model_name_or_path", source, "RT-DETR model")
        with loading("model_name_or_path", source, "RT-DETR model"):
            # class heads sized for the corpus (re-initialised when the checkpoint has other classes, e.g. COCO's 80);
            # ordinary BatchNorms in the backbone: the phases freeze them
            model = RTDetrDetector.from_pretrained(source, id2label=dict(enumerate(names)),
                                                   label2id={n: i for i, n in enumerate(names)},
                                                   freeze_backbone_batch_norms=False, ignore_mismatched_sizes=True)
        channels = model.config.backbone_config.num_channels
        if channels != data_args.in_channels:
            if channels == 3 and data_args.in_channels == 6:
                widen_input_channels(model, 6)
                logger.warning("modality rgb_event: the backbone's first convolution widened to 6 channels (RGB "
                               "filters kept, event filters zero)")
            else:
                raise RecipeError(f"model_name_or_path: {source} reads {channels} channels, modality "
                                  f"{data_args.modality} gives {data_args.in_channels}")
        for key in model_args.model_config_overrides:
            logger.warning("model_config_overrides.%s is not applied to a loaded model", key)
    else:
        model = RTDetrDetector(new_config(model_args, data_args))
    check_queries_fit(model.config, data_args.image_size, model_args.model_name_or_path or "the new RT-DETR")
    parts = {n: count_parameters(getattr(model.model, n)) for n in ("backbone", "encoder", "decoder")}
    logger.warning("RT-DETR: %s parameters (%s); %d input channels, %d classes", f"{count_parameters(model):,}",
                   ", ".join(f"{k} {v:,}" for k, v in parts.items()), data_args.in_channels, len(names))
    return model


def preprocessing_config(model_args: DetModelArguments, data_args: DetDataArguments) -> dict:
    """How evaluation reads a frame (hf_vtrain.model_folders): the RT-DETR image processor's resize and rescale."""
    return {"task": "det", "modality": data_args.modality, "image_size": data_args.image_size, "rescale": 1 / 255,
            "normalize": False, "class_names": list(data_args.class_names),
            "max_detections": model_args.max_detections, "pair_tolerance_ms": data_args.pair_tolerance_ms,
            "rgb_clock_offset_ms": data_args.rgb_clock_offset_ms}


def setup(model_args: DetModelArguments, data_args: DetDataArguments, training_args: VTrainingArguments):
    best = training_args.metric_for_best_model
    if best and not model_args.map_during_training and "loss" not in best:
        raise RecipeError(f"metric_for_best_model {best} needs the metric during training: map_during_training is "
                          f"false (choose eval_loss, or compute mAP during training)")
    with training_args.main_process_first(desc="corpus and model"):
        corpus = load_fred(data_args, seed=training_args.seed)
        logger.info("corpus: %s", corpus.report.format())
        model = build_model(model_args, data_args)
    return TaskRun(
        model=model,
        train_dataset=corpus.train_dataset,
        eval_dataset=corpus.eval_dataset,
        data_collator=collate_det,
        trainer_kwargs={"corpus": corpus, "max_detections": model_args.max_detections,
                        "map_during_training": model_args.map_during_training,
                        "preprocessing_config": preprocessing_config(model_args, data_args)},
        epoch_hooks=[corpus.set_epoch],
        corpus=corpus,
    )


class DetPredictor(TaskPredictor):
    """Boxes of every frame of a video or a folder of frames (sorted by the capture time in FRED's names, else by
    name), each frame resized as evaluation resizes it. Per input `<id>.detections.json` ({"images": [{id, file_name,
    width, height}], "detections": COCO results [{image_id, category_id, bbox [x, y, w, h] floats, score}],
    "categories"}; `python -m hf_vtrain.metrics.det GT <id>.detections.json` scores it against a ground truth whose
    image ids are the frame numbers from 1) and `<id>.boxes.mp4` with the boxes scoring `--threshold` or more."""

    unit = "frame"
    default_batch_size = 8
    result_suffix = ".detections.json"
    default_threshold = 0.5

    @staticmethod
    def add_arguments(group) -> None:
        group.add_argument("--no_video", action="store_true", help="det: no annotated MP4, only the JSON")
        group.add_argument("--fps", type=float, default=None,
                           help="det: frame rate of a frame folder's MP4 (default: from FRED's capture times, else 30)")
        group.add_argument("--event_frames", default=None,
                           help="det, rgb_event models: the event frames paired with an RGB frame folder by nearest "
                                "capture time (default: FRED's <sequence>/Event/Frames beside <sequence>/RGB)")
        group.add_argument("--min_score", type=float, default=0.01,
                           help="det: detections scoring less are left out of the JSON (default 0.01; 0 keeps the "
                                "top max_detections of every frame, as evaluation scores them)")

    def __init__(self, folder: str, preprocessing: dict, options, runtime: PredictRuntime):
        from ..models.rt_detr import RTDetrDetector

        with loading("--model", folder, "RT-DETR model"):
            self.model = RTDetrDetector.from_pretrained(folder)
        self.model.to(runtime.device).eval()
        self.pre, self.runtime, self.options = preprocessing, runtime, options
        self.threshold = runtime.threshold if runtime.threshold is not None else self.default_threshold
        self.class_names = list(preprocessing["class_names"])

    def describe(self) -> str:
        p = self.pre
        return (f"RT-DETR ({p['modality']}), {len(self.class_names)} classes, frames at {p['image_size']} px, top "
                f"{p['max_detections']} per frame; boxes >= {self.threshold} drawn")

    def plan(self, path: str, video_id: str) -> VideoPlan:
        from ..data.fred import _image_size, event_time_us, rgb_time_us, stem_of
        from ..data.video_io import VideoDecodeError, probe_video
        from ..data.common import IMAGE_EXTENSIONS

        if not os.path.isdir(path):
            if self.pre["modality"] == "rgb_event":
                raise VideoDecodeError(f"{path}: an rgb_event model reads a folder of RGB frames and their event "
                                       f"frames, not a video")
            info = probe_video(path, decode_last=True, num_threads=self.runtime.decode_threads)
            return VideoPlan(video_id, path, info.num_frames, info.fps, info.height, info.width, info.num_frames,
                             {"frames": None})
        names = [n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)]
        times = {n: rgb_time_us(stem_of(n)) if rgb_time_us(stem_of(n)) is not None else event_time_us(stem_of(n))
                 for n in names}
        timed = all(t is not None for t in times.values())
        names.sort(key=(lambda n: (times[n], n)) if timed else None)
        size = _image_size(os.path.join(path, names[0]))
        if isinstance(size, str):
            raise VideoDecodeError(f"{os.path.join(path, names[0])}: {size}")
        fps = self.options.fps or 30.0
        if timed and self.options.fps is None and len(names) > 1:
            gaps = sorted(times[b] - times[a] for a, b in zip(names, names[1:]))
            fps = 1e6 / gaps[len(gaps) // 2] if gaps[len(gaps) // 2] > 0 else 30.0
        extra = {"frames": [os.path.join(path, n) for n in names]}
        if self.pre["modality"] == "rgb_event":
            extra["events"] = self._paired_events(path, names, times)
        return VideoPlan(video_id, path, len(names), fps, size[1], size[0], len(names), extra)

    def _paired_events(self, path: str, names: list[str], times: dict) -> list[str]:
        """The event frame nearest in time to each RGB frame (the loader's rule and tolerance), or a
        VideoDecodeError naming what is missing or too far."""
        from ..data.fred import _frames_of, nearest_pairs
        from ..data.video_io import VideoDecodeError

        folder = self.options.event_frames or os.path.join(os.path.dirname(os.path.abspath(path)), "Event", "Frames")
        if any(times[n] is None for n in names) or any(n.count("_frame_") for n in names):
            raise VideoDecodeError(f"{path}: an rgb_event model reads RGB frames named by capture time "
                                   f"(Video_<seq>_HH_MM_SS.ffffff.jpg) and pairs event frames with them")
        events = _frames_of(folder, "event")[0] if os.path.isdir(folder) else []
        if not events:
            raise VideoDecodeError(f"{path}: no event frames to pair with in {folder} (--event_frames)")
        rgb = [times[n] for n in names]
        origin = rgb[0] - events[0][0] - int(round(float(self.pre.get("rgb_clock_offset_ms", 0.0)) * 1000))
        tolerance = float(self.pre.get("pair_tolerance_ms", 20.0)) * 1000
        paired = []
        for name, (j, gap) in zip(names, nearest_pairs([t - origin for t in rgb], [t for t, _ in events])):
            if gap > tolerance:
                raise VideoDecodeError(f"{os.path.join(path, name)}: the nearest event frame {events[j][1]} is "
                                       f"{gap / 1000:.1f} ms away (pair_tolerance_ms {tolerance / 1000})")
            paired.append(os.path.join(folder, events[j][1]))
        return paired

    def _batches(self, plan: VideoPlan):
        from ..data.fred import _read_image
        from ..data.video_io import ReaderCache, VideoDecodeError

        size, step = int(self.pre["image_size"]), self.runtime.batch_size
        starts = list(range(0, plan.num_frames, step))
        reader = ReaderCache(self.runtime.decode_threads) if plan.extra["frames"] is None else None

        def load(start):
            import torch

            from ..data.fred import resize_frame

            stop = min(start + step, plan.num_frames)
            try:
                if reader is not None:
                    frames = reader.get(plan.path).get_frames(list(range(start, stop)))  # (n, H, W, 3) uint8
                    frames = [torch.as_tensor(f).permute(2, 0, 1) for f in frames]
                else:
                    frames = [_read_image(p) for p in plan.extra["frames"][start:stop]]
                if plan.extra.get("events"):  # early fusion: RGB and its event frame as 6 channels
                    pixels_in = [torch.cat([f, _read_image(e)]) for f, e in zip(frames,
                                                                             plan.extra["events"][start:stop])]
                else:
                    pixels_in = frames
            except Exception as err:  # noqa: BLE001 - a frame that cannot be read fails this input, named
                raise VideoDecodeError(f"{plan.path}: frames {start}-{stop - 1} cannot be read ({err})") from None
            sizes = torch.tensor([[f.shape[1], f.shape[2]] for f in frames])
            pixels = torch.stack([resize_frame(f, size) for f in pixels_in]) / 255.0
            return start, frames, pixels, sizes

        return prefetched(starts, load)

    def run(self, plan: VideoPlan, advance) -> dict:
        import tempfile

        images, detections = [], []
        video = None
        if not self.options.no_video:
            handle, mp4 = tempfile.mkstemp(suffix=".boxes.mp4")
            os.close(handle)
            video = Mp4Writer(mp4, plan.fps)
        try:
            for start, frames, pixels, sizes in self._batches(plan):
                self._run_batch(plan, start, frames, pixels, sizes, images, detections, video)
                advance(len(frames))
        except BaseException:
            if video is not None:
                video.close()
                os.remove(video.path)
            raise
        if video is not None:
            video.close()
        return {"images": images, "detections": detections, "video": video.path if video is not None else None}

    def _run_batch(self, plan, start, frames, pixels, sizes, images, detections, video) -> None:
        import torch

        from ..models.rt_detr import detections_from_outputs

        with torch.no_grad(), self.runtime.autocast():
            out = self.model(pixel_values=pixels.to(self.runtime.device))
        dets = detections_from_outputs(out.logits, out.pred_boxes, sizes.to(self.runtime.device),
                                       int(self.pre["max_detections"])).cpu()
        for k, (frame, rows) in enumerate(zip(frames, dets)):
            image_id = start + k + 1
            name = (os.path.basename(plan.extra["frames"][start + k]) if plan.extra["frames"] else
                    f"{plan.video_id}#{start + k}")
            images.append({"id": image_id, "file_name": name, "width": int(frame.shape[2]),
                           "height": int(frame.shape[1])})
            frame_dets = [{"image_id": image_id, "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                           "score": sc} for x1, y1, x2, y2, sc, c in rows.tolist() if sc >= self.options.min_score]
            detections += frame_dets
            if video is not None:
                video.write(self._draw(frame, frame_dets))

    def _draw(self, frame, frame_dets):
        from ..plotting.det import draw_boxes

        return draw_boxes(frame.permute(1, 2, 0).numpy(), [], frame_dets, self.class_names, self.threshold)

    def write(self, plan: VideoPlan, result: dict, out_dir: str) -> tuple[list[str], str]:
        import shutil

        payload = {"images": result["images"], "detections": result["detections"],
                   "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]}
        files = [write_json_atomic(os.path.join(out_dir, plan.video_id + self.result_suffix), payload)]
        if result.get("video"):
            path = os.path.join(out_dir, plan.video_id + ".boxes.mp4")
            shutil.move(result.pop("video"), path)
            os.chmod(path, 0o644)  # a temporary file's 0600 otherwise
            files.append(path)
        shown = sum(1 for d in result["detections"] if d["score"] >= self.threshold)
        return files, f"{shown} boxes >= {self.threshold} in {len(result['images'])} frames"

    def read(self, out_dir: str, video_id: str) -> dict:
        with open(os.path.join(out_dir, video_id + self.result_suffix), encoding="utf-8") as handle:
            return json.load(handle)

    def write_combined(self, results: dict, out_dir: str) -> list[str]:
        summary = {k: {"frames": len(v["images"]),
                       f"boxes_at_{self.threshold}": sum(1 for d in v["detections"] if d["score"] >= self.threshold),
                       "file": k + self.result_suffix} for k, v in results.items()}
        return [write_json_atomic(os.path.join(out_dir, "predictions.json"), summary)]


class Mp4Writer:
    """H.264 frames appended one at a time (predict's annotated video, never all frames in memory); sizes cropped to
    even numbers (yuv420p)."""

    def __init__(self, path: str, fps: float):
        import av

        self.path, self.fps = path, max(1, int(round(fps)))
        self.container, self.stream = av.open(path, "w"), None

    def write(self, frame) -> None:
        import av

        height, width = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            self.stream.options = {"preset": "veryfast", "crf": "23"}
        video_frame = av.VideoFrame.from_ndarray(frame[:height, :width].copy(), format="rgb24")
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


SPEC = TaskSpec(
    description="drone detection on RGB and event frames (RT-DETR; FRED's layout), COCO mAP through pycocotools",
    model_args=DetModelArguments,
    data_args=DetDataArguments,
    training_args=VTrainingArguments,
    trainer_cls=DetTrainer,
    setup=setup,
    validate=validate_fred,
    check_recipe=check_recipe,
    predictor=DetPredictor,
    load_corpus=fred.load_corpus,
)
