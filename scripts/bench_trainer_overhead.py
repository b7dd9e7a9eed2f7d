"""What VTrainer costs per step over a bare PyTorch loop: the same model, batches and optimizer (AdamW, two parameter
groups, gradient clipping, a warmup + cosine schedule per step), stepped by a plain loop and by VTrainer with its
tricks on (EMA every step, parameter groups, epoch callbacks, loss-part logging, the non-finite check), in one
process, alternating, several rounds. Prints steps/s of both and the ratio (VTrainer / bare); a figure, not a test.

    python scripts/bench_trainer_overhead.py [--dim 512] [--layers 4] [--batch 64] [--steps 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import PretrainedConfig, PreTrainedModel, TrainerCallback  # noqa: E402
from transformers.utils import ModelOutput  # noqa: E402

from hf_vtrain.trainers.arguments import VTrainingArguments  # noqa: E402
from hf_vtrain.trainers.base import VTrainer  # noqa: E402
from hf_vtrain.trainers.optimization import warmup_cosine_lambda  # noqa: E402


class BenchConfig(PretrainedConfig):
    model_type = "hf_vtrain_bench"

    def __init__(self, dim=512, layers=4, **kwargs):
        self.dim, self.layers = dim, layers
        super().__init__(**kwargs)


@dataclass
class BenchOutput(ModelOutput):
    loss: torch.Tensor = None
    fit_loss: torch.Tensor = None
    reg_loss: torch.Tensor = None


class BenchModel(PreTrainedModel):
    config_class = BenchConfig

    def __init__(self, config):
        super().__init__(config)
        self.backbone = nn.Sequential(*[nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU())
                                        for _ in range(config.layers)])
        self.head = nn.Linear(config.dim, 1)
        self.post_init()

    def forward(self, x, y=None, **kwargs):
        pred = self.head(self.backbone(x)).squeeze(-1)
        fit = ((pred - y) ** 2).mean()
        reg = 1e-4 * pred.abs().mean()
        return BenchOutput(loss=fit + reg, fit_loss=fit, reg_loss=reg)


def data(n: int, dim: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    return [{"x": x[i], "y": x[i, :8].sum()} for i in range(n)]


GROUPS = [{"name": "backbone", "patterns": ["^backbone\\."], "lr": 1e-4}, {"name": "head", "patterns": ["^head\\."],
                                                                              "lr": 1e-3}]


def bare_loop(model, dataset, batch: int, steps: int) -> float:
    """The Trainer's work without the Trainer: DataLoader, forward, backward, clip, AdamW, schedule, zero_grad."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    groups = [{"params": list(model.backbone.parameters()), "lr": 1e-4, "weight_decay": 0.0},
              {"params": list(model.head.parameters()), "lr": 1e-3, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_lambda(steps // 10, steps, 0.0))
    model.train()
    done, start = 0, time.perf_counter()
    while done < steps:
        for inputs in loader:
            loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return steps / (time.perf_counter() - start)


class _Clock(TrainerCallback):
    """The time of the optimizer steps alone: from the first step's begin (the Trainer's setup excluded, as the bare
    loop's is) to the last step's end."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()


def vtrainer(model, dataset, batch: int, steps: int, folder: str) -> float:
    epochs = max(1, -(-steps // (len(dataset) // batch)))
    args = VTrainingArguments(
        output_dir=folder, per_device_train_batch_size=batch, max_steps=steps, num_train_epochs=epochs,
        learning_rate=1e-3, weight_decay=0.0, param_groups=GROUPS, lr_scheduler_type="cosine", warmup_epochs=0,
        warmup_steps=steps // 10, ema_decay=0.999, logging_steps=10, save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, dataloader_drop_last=True,
        log_level="warning", seed=0)
    clock = _Clock()
    trainer = VTrainer(model=model, args=args, train_dataset=dataset, callbacks=[clock])
    trainer.train()
    return (steps - 1) / (clock.end - clock.start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    dataset = data(args.batch * 50, args.dim)
    bare, trained = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):  # alternating, so drifts of the machine reach both
            torch.manual_seed(0)
            bare.append(bare_loop(BenchModel(BenchConfig(args.dim, args.layers)), dataset, args.batch, args.steps))
            torch.manual_seed(0)
            trained.append(vtrainer(BenchModel(BenchConfig(args.dim, args.layers)), dataset, args.batch, args.steps,
                                    folder))
    b, v = statistics.median(bare), statistics.median(trained)
    params = sum(p.numel() for p in BenchModel(BenchConfig(args.dim, args.layers)).parameters())
    print(f"model: {args.layers} x Linear({args.dim}) + head ({params:,} parameters), batch {args.batch}, "
          f"{args.steps} steps x {args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"bare PyTorch loop: {b:8.1f} steps/s  (rounds: {', '.join(f'{x:.1f}' for x in bare)})")
    print(f"VTrainer:          {v:8.1f} steps/s  (rounds: {', '.join(f'{x:.1f}' for x in trained)})")
    print(f"ratio VTrainer / bare: {v / b:.3f}")
    return {"bare": b, "vtrainer": v, "ratio": v / b}


if __name__ == "__main__":
    main()
