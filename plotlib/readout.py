"""Readouts: turn backbone logits into class probabilities, predictions and a training loss.

Labels are integers everywhere: a class index for a softmax readout, a bit mask (bit i = output
bit i) for a per-bit sigmoid readout. ``layout`` gives the one-hot (or bit) vector of a label in
the same layout as ``probs``, which is what output-effect signatures compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SoftmaxReadout:
    """Softmax over ``n_classes`` logits; the label is the class index."""

    n_classes: int

    @property
    def width(self) -> int:
        return self.n_classes

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def layout(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels.long(), self.n_classes).float()


@dataclass(frozen=True)
class BitsReadout:
    """One sigmoid per output bit; the label is the bit mask, correct only if every bit is."""

    n_bits: int

    @property
    def width(self) -> int:
        return self.n_bits

    def _bits(self, labels: torch.Tensor) -> torch.Tensor:
        shifts = torch.arange(self.n_bits, device=labels.device)
        return ((labels.long().unsqueeze(-1) >> shifts) & 1).float()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        weights = 2 ** torch.arange(self.n_bits, device=logits.device)
        return ((logits > 0).long() * weights).sum(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, self._bits(labels))

    def layout(self, labels: torch.Tensor) -> torch.Tensor:
        return self._bits(labels)
