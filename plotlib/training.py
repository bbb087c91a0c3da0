"""Seeded backbone training on freshly sampled factual inputs, until a target accuracy."""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from plotlib.tasks import Task

log = logging.getLogger(__name__)

#: ``backbone.kind`` values whose model is built, never trained: a pretrained LM, or a task's constructed network.
UNTRAINED_KINDS = ("pretrained", "constructed")


@torch.no_grad()
def factual_accuracy(task: Task, backbone: nn.Module, inputs, batch_size: int = 512) -> float:
    """Share of ``inputs`` whose predicted label is the causal model's output (in batches)."""
    labels = torch.as_tensor(task.outputs(inputs))
    predictions = [task.readout.predict(backbone(task.encode(inputs.iloc[i:i + batch_size]))) for i in range(0, len(inputs), batch_size)]
    return float((torch.cat(predictions).cpu() == labels).float().mean())


def learning_rate_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int = 0):
    """Cosine decay over ``steps``; with ``warmup_steps`` the decayed rate is also scaled by a linear
    ramp from 1 / warmup_steps to 1 over the first steps (a small transformer can stall at chance without it)."""
    if not warmup_steps:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_backbone(task: Task, options: dict, seed: int) -> tuple[nn.Module, dict]:
    """Train a fresh backbone with AdamW and a cosine learning-rate schedule (optionally after a linear
    warmup) for a fixed number of steps on newly sampled inputs. The whole schedule runs (weight decay
    needs it to prune the connections a modular solution does not use). The caller judges the returned
    factual accuracy against ``training.min_accuracy`` (:func:`accuracy_floor_failure`)."""
    backbone = task.build_backbone(options["backbone"], seed)
    cfg = options["training"]
    rng = np.random.default_rng([seed, 31337])
    held_out = task.evaluation_inputs(rng, cfg["eval_size"])
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    schedule = learning_rate_schedule(optimizer, cfg["steps"], cfg.get("warmup_steps", 0))
    torch.manual_seed(seed)
    for step in range(1, cfg["steps"] + 1):
        batch = task.training_inputs(rng, cfg["batch_size"])
        loss = task.readout.loss(backbone(task.encode(batch)), torch.as_tensor(task.outputs(batch)))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % cfg["eval_every"] == 0:
            log.info("train step %d/%d loss %.4f held-out accuracy %.4f", step, cfg["steps"], loss.item(),
                     factual_accuracy(task, backbone, held_out))
    backbone.eval().requires_grad_(False)
    return backbone, {"factual_accuracy": factual_accuracy(task, backbone, held_out), "steps": cfg["steps"]}


def chance_accuracy(task: Task, inputs) -> float:
    """The accuracy of always answering the most frequent label of ``inputs``: what a model that ignores
    its input reaches."""
    labels = np.asarray(task.outputs(inputs))
    return float(np.unique(labels, return_counts=True)[1].max() / len(labels))


def accuracy_floor_failure(info: dict, min_accuracy: float) -> str | None:
    """Why a backbone fails the accuracy floor (below ``training.min_accuracy``, or no better than
    ``info["chance"]``, the most frequent label's rate), or None when it passes; a floor of 0 disables both."""
    if min_accuracy <= 0:  # a floor of 0 judges nothing (the tiny test scales)
        return None
    accuracy = info["factual_accuracy"]
    how = f"after {info['steps']} training steps" if info.get("steps") else f"as built ({info.get('checkpoint')})"
    if accuracy < min_accuracy:
        return f"backbone factual accuracy {accuracy:.4f} is below training.min_accuracy {min_accuracy} {how}"
    if "chance" in info and accuracy <= info["chance"]:
        return (f"backbone factual accuracy {accuracy:.4f} is no better than chance ({info['chance']:.4f}, always "
                f"answering the most frequent label) {how}")
    return None


class BelowAccuracyFloor(RuntimeError):
    """A backbone failed the accuracy floor and the spec says to stop (``training.below_floor: stop``)."""
