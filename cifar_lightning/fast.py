"""Reusable parts of the fast recipe for torch: whitening init, weight averaging, TTA."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .core.recipes import averaging_decay
from .core.whitening import whitening_filters


def init_whitening(model: nn.Module, images: torch.Tensor) -> None:
    """Set ``model.whiten``'s filters from normalised float images (N, 3, 32, 32)."""
    filters = whitening_filters(images.detach().cpu().numpy(), kernel=model.whiten.kernel_size[0])
    with torch.no_grad():
        model.whiten.weight.copy_(torch.from_numpy(filters))


def tta_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits averaged over the image and its mirror (1/4 each) and 1-pixel shifts
    up-left and down-right, each also mirrored (1/8 each)."""

    def mirrored(x):
        return 0.5 * model(x) + 0.5 * model(x.flip(-1))

    padded = F.pad(images, (1,) * 4, mode="reflect")
    h, w = images.shape[-2:]
    shifted = 0.5 * mirrored(padded[..., :h, :w]) + 0.5 * mirrored(padded[..., 2 : h + 2, 2 : w + 2])
    return 0.5 * mirrored(images) + 0.5 * shifted


class LookaheadAveraging(L.Callback):
    """Every `every` steps blend the weights into a running average and copy it back.

    The average's decay grows as (step / total)^3 (see ``recipes.averaging_decay``),
    so it barely averages early and strongly at the end; the final weights are the
    average. Its state goes into checkpoints, so a resumed run continues it.
    """

    def __init__(self, every: int = 5):
        self.every = every
        self.average: dict[str, torch.Tensor] | None = None

    def _floats(self, pl_module):
        return {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer, pl_module):
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self._floats(pl_module).items()}
        else:  # restored from a checkpoint: move to the module's device
            self.average = {k: v.to(pl_module.device) for k, v in self.average.items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every:
            return
        decay = averaging_decay(step, pl_module.total_training_steps())
        for k, v in self._floats(pl_module).items():
            self.average[k].lerp_(v, 1 - decay)
            v.copy_(self.average[k])

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module):
        for k, v in self._floats(pl_module).items():
            v.copy_(self.average[k])

    def state_dict(self):
        return {"every": self.every, "average": self.average}

    def load_state_dict(self, state_dict):
        self.every, self.average = state_dict["every"], state_dict["average"]
