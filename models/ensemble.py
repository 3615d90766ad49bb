"""A model version made of several networks of one architecture (fold models or seeds).

:class:`Ensemble` is an ``nn.Module`` whose output is the ensemble's logits
(:func:`models.architectures.ensemble_logits`: its COVID-19 probability is the mean of its
members' probabilities), so serving, evaluation and the reference occlusion take it wherever they
take one network. What the card records about its members is
:class:`models.card.EnsembleMember`; the registry stores each member's weights beside the card.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.architectures import ensemble_logits


class Ensemble(nn.Module):
    """Members of one architecture whose probability is averaged (order = the card's order)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's logits [N, 2] (log of the members' mean softmax)."""
        return ensemble_logits([member(x) for member in self.members])

    def subset(self, count: int) -> Ensemble:
        """The ensemble of the first ``count`` members (0, or at least all: this ensemble).

        The modules are shared, not copied: what the worker maps with when the setting
        ``heatmap_members`` asks for fewer members than the ensemble has.
        """
        if count < 0:
            raise ValueError(f"member count must be 0 (all) or positive, got {count}")
        if count == 0 or count >= len(self.members):
            return self
        return Ensemble(list(self.members)[:count]).train(self.training)
