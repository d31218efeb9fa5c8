"""Muon for torch, as airbench94_muon.py uses it, beside SGD groups in one optimizer.

Lightning's automatic optimization drives one optimizer, so a recipe of Muon (on the
conv filters) and SGD (on the rest) is one ``torch.optim.Optimizer`` whose param groups
say which update they take (``"muon": True`` or False), as Keller Jordan's
``MuonWithAuxAdam`` does with Adam. Group learning rates are scheduled like any other
optimizer's (``LambdaLR`` with one factor per group).
"""

from __future__ import annotations

import torch

from cifar_lightning.core.recipes import NS_COEFFICIENTS

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b. On the CPU a bfloat16 product is computed in float32 and rounded to bfloat16
    once, which is what torch's own bfloat16 matmul computes (float32 accumulation) up to
    summation order, ~30x faster on a CPU without native bfloat16 (2-core AVX2 x86-64,
    X X^T at (256, 2304) and the two products after it: 0.28 s against 0.008 s). Other
    devices use their native bfloat16 matmul."""
    if a.device.type == "cpu" and a.dtype == torch.bfloat16:
        return (a.float() @ b.float()).to(torch.bfloat16)
    return a @ b


def newton_schulz(g: torch.Tensor, steps: int = 3, dtype: str = "bfloat16", eps: float = 1e-7) -> torch.Tensor:
    """An approximately orthogonal matrix with g's row and column spaces (airbench94_muon's
    ``zeropower_via_newtonschulz5``): X = g / (|g|_F + eps) in `dtype`, transposed when it
    has more rows than columns, then `steps` times X <- a X + (b A + c A^2) X with A = X X^T.

    Args:
        g: a 2-D tensor (rows, columns).
        steps: iterations (3 in airbench94_muon).
        dtype: "bfloat16" (as published) or "float32".
    Returns: a tensor of g's shape in `dtype`.
    """
    if g.ndim != 2:
        raise ValueError(f"newton_schulz takes a 2-D matrix, got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = g.to(_DTYPES[dtype])
    x = x / (x.norm() + eps)  # the top singular value is then at most 1
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        A = _matmul(x, x.T)
        x = a * x + _matmul(b * A + _matmul(c * A, A), x)  # (c A) A, as c * A @ A parses
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon on groups with ``muon=True`` and torch's SGD update on the others.

    Muon group (airbench94_muon.py's ``Muon.step``), for each parameter p (out, ...) with
    gradient g: buf = momentum buf + g; g' = g + momentum buf with Nesterov, else buf;
    p <- p sqrt(out) / |p|_F (each filter bank rescaled to Frobenius norm sqrt(out), before
    the update); p <- p - lr NS(g' reshaped (out, -1)), NS = ``newton_schulz`` with the group's
    ``ns_steps`` and ``ns_dtype``. No weight decay: the rescaling fixes the norm.

    SGD group: torch.optim.SGD with dampening 0: d = g + weight_decay p; buf = momentum buf
    + d; p <- p - lr (d + momentum buf with Nesterov, else buf).

    Group keys: params, lr, momentum, nesterov, muon; SGD groups also weight_decay; Muon
    groups also ns_steps, ns_dtype.
    """

    def __init__(self, params):
        super().__init__(
            params, dict(momentum=0.0, nesterov=False, weight_decay=0.0, muon=False, ns_steps=3, ns_dtype="bfloat16")
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, nesterov = group["lr"], group["momentum"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["muon"] and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(g)
                g = g.add(buf, alpha=momentum) if nesterov else buf
                if group["muon"]:
                    p.mul_(len(p) ** 0.5 / p.norm())
                    g = newton_schulz(g.reshape(len(g), -1), group["ns_steps"], group["ns_dtype"]).view(g.shape)
                p.add_(g.to(p.dtype), alpha=-lr)
        return loss
