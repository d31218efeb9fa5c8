"""Reusable parts of the fast recipe for torch: whitening init, weight averaging, TTA."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from cifar_lightning.core.recipes import averaging_decay
from cifar_lightning.core.whitening import whitening_filters


def init_whitening(model: nn.Module, images: torch.Tensor, bias=None) -> None:
    """Set ``model.whiten``'s filters from normalised float images (N, 3, 32, 32), and its
    bias to `bias` (float32 (24,), e.g. ``core.whitening.initial_bias``) when given."""
    filters = whitening_filters(images.detach().cpu().numpy(), kernel=model.whiten.kernel_size[0])
    with torch.no_grad():
        model.whiten.weight.copy_(torch.from_numpy(filters))
        if bias is not None:
            model.whiten.bias.copy_(torch.as_tensor(bias))


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
    """Every `every` optimizer steps blend the weights into a running average and copy it
    back; at the schedule's last step copy the average into the model, so the final
    weights are the average (airbench94.py's ``lookahead_state.update(model, decay=1.0)``).

    The average's decay grows as (step / total)^3 (see ``recipes.averaging_decay``),
    so it barely averages early and strongly at the end. It acts once per optimizer step:
    under gradient accumulation Lightning calls ``on_train_batch_end`` for every
    micro-batch, and only a batch after which ``global_step`` moved ends a step. The
    final copy happens at the last step itself, not in ``on_train_end``, so the last
    checkpoint already holds the final weights: a run resumed after its last epoch
    (Lightning then skips ``on_train_start`` and ``on_train_end``) ends with them too.
    Its state goes into checkpoints, so a resumed run continues the average.
    """

    def __init__(self, every: int = 5):
        self.every = every
        self.average: dict[str, torch.Tensor] | None = None
        self._last_step: int | None = None  # global_step after the last optimizer step seen

    def _floats(self, pl_module):
        return {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer, pl_module):
        self._last_step = trainer.global_step
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self._floats(pl_module).items()}
        else:  # restored from a checkpoint: move to the module's device
            self.average = {k: v.to(pl_module.device) for k, v in self.average.items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == self._last_step:  # a micro-batch of an accumulated step: no optimizer step yet
            return
        self._last_step = step
        total = pl_module.total_training_steps()
        if step % self.every == 0:
            self._blend(pl_module, averaging_decay(step, total))
        if step >= total:
            self._blend(pl_module, 1.0)  # the final weights are the average

    def _blend(self, pl_module, decay: float) -> None:
        for k, v in self._floats(pl_module).items():
            self.average[k].lerp_(v, 1 - decay)
            v.copy_(self.average[k])

    def state_dict(self):
        return {"every": self.every, "average": self.average}

    def load_state_dict(self, state_dict):
        self.every, self.average = state_dict["every"], state_dict["average"]
