"""Lightning's ``Trainer(precision=...)`` in MLX: the precision names, dtype casting, and a
dynamic loss scaler that runs inside ``mx.compile``.

Sources of each behaviour (Lightning 2.6.6, torch 2.x):

- names and aliases: ``lightning/fabric/connector.py`` ``_convert_precision_to_unified_args``
  and the ``_PRECISION_INPUT*`` literals in ``lightning/fabric/plugins/precision/precision.py``;
- what each name does: ``lightning/pytorch/trainer/connectors/accelerator_connector.py``
  ``_check_and_init_precision`` (``"16-true"``/``"bf16-true"`` -> ``HalfPrecision``, which
  converts the module's parameters; ``"16-mixed"``/``"bf16-mixed"`` -> ``MixedPrecision``,
  which keeps float32 parameters, autocasts the forward, and holds a ``GradScaler`` for
  ``"16-mixed"`` only: ``lightning/pytorch/plugins/precision/amp.py``, ``half.py``);
- the loss scaler: ``torch/amp/grad_scaler.py`` (``GradScaler.scale``, ``unscale_``, ``step``,
  ``update``, ``state_dict``) and its CPU kernels ``_amp_foreach_non_finite_check_and_unscale_``
  and ``_amp_update_scale_`` (``aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp``).

This module imports MLX only (never torch or lightning), so an MLX-only install can use it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx.utils import tree_map

__all__ = [
    "DynamicLossScaler",
    "Precision",
    "cast_floating",
    "evaluation_precision",
    "parse_precision",
    "PRECISION_NAMES",
]

# The five canonical names MLX supports, in the order Lightning's docs list them.
PRECISION_NAMES = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")

# Lightning's legacy aliases (_PRECISION_INPUT_STR_ALIAS_CONVERSION; ints are str()-ed first).
_ALIASES = {"64": "64-true", "32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}

# Names Lightning accepts but this adapter cannot honour, and why (said in the error).
_UNSUPPORTED = {
    "64-true": "MLX has float64 on the CPU only, not on the GPU",
    "transformer-engine": "it needs NVIDIA's Transformer Engine (FP8 on CUDA)",
    "transformer-engine-float16": "it needs NVIDIA's Transformer Engine (FP8 on CUDA)",
}

_ACCEPTED = (
    "accepted: " + ", ".join(repr(n) for n in PRECISION_NAMES) + " or Lightning's aliases 32, '32', 16, '16', 'bf16'"
)


@dataclass(frozen=True)
class Precision:
    """One of Lightning's precision settings, in MLX dtypes.

    name: the canonical Lightning name (one of ``PRECISION_NAMES``).
    param_dtype: the dtype parameters are stored and updated in: ``mx.float32`` for
        ``"32-true"`` and ``"*-mixed"`` (Lightning's ``MixedPrecision`` leaves the module in
        float32), ``mx.bfloat16`` / ``mx.float16`` for ``"bf16-true"`` / ``"16-true"``
        (``HalfPrecision.convert_module`` casts the module).
    compute_dtype: the dtype the forward computes in: ``mx.float32``, ``mx.bfloat16`` or
        ``mx.float16`` (``torch.autocast(dtype=...)`` for ``*-mixed``).
    scales_loss: True for ``"16-mixed"`` only: the one setting whose ``MixedPrecision`` holds a
        ``GradScaler`` (bfloat16 has float32's exponent range, so it needs none).
    """

    name: str
    param_dtype: mx.Dtype
    compute_dtype: mx.Dtype
    scales_loss: bool


_PRECISIONS = {
    "32-true": Precision("32-true", mx.float32, mx.float32, False),
    "bf16-mixed": Precision("bf16-mixed", mx.float32, mx.bfloat16, False),
    "16-mixed": Precision("16-mixed", mx.float32, mx.float16, True),
    "bf16-true": Precision("bf16-true", mx.bfloat16, mx.bfloat16, False),
    "16-true": Precision("16-true", mx.float16, mx.float16, False),
}


def parse_precision(value: Any) -> Precision:
    """The ``Precision`` for a ``Trainer(precision=value)`` argument, as Lightning reads it.

    Follows ``_convert_precision_to_unified_args`` (``lightning/fabric/connector.py``):
    ints 64/32/16 are read as the strings "64"/"32"/"16"; the aliases map "32" -> "32-true",
    "16" -> "16-mixed", "bf16" -> "bf16-mixed" (and "64" -> "64-true"); "16" and "bf16" (and
    16) warn with Lightning's own ``UserWarning`` text that the alias is discouraged. ``None``
    is Lightning's default and means "32-true" (the connector's ``_precision_flag`` default).

    Unlike Lightning, ``"16-mixed"`` is not changed to ``"bf16-mixed"`` here: Lightning does
    that for ``accelerator="cpu"`` because torch's CPU autocast lacks float16, which is the
    trainer's decision (it knows the device), not the name's.

    Raises:
        ValueError: one line naming the value and the accepted names, for anything else:
            values Lightning rejects too, floats and bools (Lightning's ``in`` test lets
            ``16.0`` through and later fails), and "64-true" / "transformer-engine*", which
            Lightning accepts but this adapter does not support (the message says why).
    """
    if value is None:
        return _PRECISIONS["32-true"]
    # bool is an int subclass and 16.0 == 16: only real ints and strings are Lightning's inputs.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"Precision {value!r} is invalid; {_ACCEPTED}")
    name = str(value)
    if name in _ALIASES:
        if name[:2] not in ("32", "64"):
            # Lightning's message, word for word, so a user sees the same advice.
            warnings.warn(
                f"`precision={name}` is supported for historical reasons but its usage is discouraged. "
                f"Please set your precision to {_ALIASES[name]} instead!",
                UserWarning,
                stacklevel=2,
            )
        name = _ALIASES[name]
    if name in _UNSUPPORTED:
        raise ValueError(
            f"Precision {value!r} is valid in Lightning but not supported by the MLX adapter "
            f"({_UNSUPPORTED[name]}); {_ACCEPTED}"
        )
    if name not in _PRECISIONS:
        raise ValueError(f"Precision {value!r} is invalid; {_ACCEPTED}")
    return _PRECISIONS[name]


def _is_floating(x: Any) -> bool:
    # mx.floating excludes complex64, as torch.is_floating_point is False for complex tensors.
    return isinstance(x, mx.array) and mx.issubdtype(x.dtype, mx.floating)


def cast_floating(tree: Any, dtype: mx.Dtype) -> Any:
    """``tree`` (nested dicts / lists / tuples) with every floating ``mx.array`` leaf cast to
    ``dtype``; integer, bool and complex arrays and non-array leaves are returned unchanged.

    Lightning's ``_convert_fp_tensor`` (``lightning/fabric/plugins/precision/utils.py``):
    ``tensor.to(dst_type) if torch.is_floating_point(tensor) else tensor``, used by
    ``HalfPrecision.convert_input``; labels and indices must stay integers.
    """
    return tree_map(lambda x: x.astype(dtype) if _is_floating(x) else x, tree)


@contextmanager
def evaluation_precision(module, precision: Precision):
    """The precision an evaluation step (validation, test, predict) computes in, as
    Lightning's plugins run those steps (``MixedPrecision.forward_context`` autocasts them;
    ``HalfPrecision`` converts the module and the inputs): yields the function that casts a
    batch. *-mixed computes from half copies of the module's floating arrays (BatchNorm's
    running statistics too, which would otherwise promote every activation after them back
    to float32), given back after, so the module holds float32 weights outside the step;
    *-true's are half already.
    Either way the batch's floating leaves are cast to the compute dtype, as the training
    step casts them. 32-true: nothing is cast."""
    compute = precision.compute_dtype
    if compute == mx.float32:
        yield lambda batch: batch
        return
    saved = None
    if precision.name.endswith("-mixed"):
        saved = module.parameters()
        module.update(cast_floating(saved, compute))
    try:
        yield lambda batch: cast_floating(batch, compute)
    finally:
        if saved is not None:
            module.update(saved)


class DynamicLossScaler:
    """torch's ``torch.amp.GradScaler`` algorithm in MLX, callable inside ``mx.compile``.

    State (``self.state``, a dict the trainer passes to ``mx.compile`` as input and output):
    ``{"scale": float32 scalar, "growth_tracker": int32 scalar}`` (GradScaler's ``_scale``
    and ``_growth_tracker`` tensors, same dtypes). No method used in a step reads a value
    back to the host or branches in Python on an array: a step with non-finite gradients
    is skipped with ``select`` (``mx.where``), not ``if``.

    One step, as ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``::

        grads = mx.grad(lambda p: scaler.scale(loss_fn(p)))(params)
        grads, found_inf = scaler.unscale(grads)
        new_params, new_opt_state = <optimizer update with grads>
        params = scaler.select(found_inf, new_params, params)       # skipped: unchanged
        opt_state = scaler.select(found_inf, new_opt_state, opt_state)
        scaler.update(found_inf)

    Numerics: the same as torch's CPU kernels when the factors are exactly representable
    in float32 (the defaults 2.0 and 0.5, any power of two): torch multiplies the float32
    scale by a float64 factor and rounds once; MLX multiplies by the factor rounded to
    float32, which can differ by one float32 rounding for factors such as 0.3.

    Raises:
        ValueError: ``growth_factor <= 1`` or ``backoff_factor >= 1`` (torch raises
            AssertionError with the same conditions).
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
    ) -> None:
        if growth_factor <= 1.0:
            raise ValueError(f"growth_factor must be > 1.0, got {growth_factor!r} (as torch.amp.GradScaler)")
        if backoff_factor >= 1.0:
            raise ValueError(f"backoff_factor must be < 1.0, got {backoff_factor!r} (as torch.amp.GradScaler)")
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.state = {
            "scale": mx.array(init_scale, dtype=mx.float32),
            "growth_tracker": mx.array(0, dtype=mx.int32),
        }

    def scale(self, loss: mx.array) -> mx.array:
        """``loss * scale``, in ``loss``'s dtype (torch: a float16 loss times the float32
        0-dim scale stays float16); the product is formed in float32 and rounded once, so a
        float16 loss is not multiplied by 65536 rounded to float16 (which is inf)."""
        return (loss.astype(mx.float32) * self.state["scale"]).astype(loss.dtype)

    def unscale(self, grads: Any) -> tuple[Any, mx.array]:
        """``(grads * (1 / scale), found_inf)``: every floating leaf unscaled, and a bool
        scalar that is True when any element of any floating leaf is inf or NaN.

        torch's ``GradScaler.unscale_`` computes ``inv_scale`` once (in float64, rounded to
        float32: equal to float32's correctly rounded reciprocal) and
        ``_amp_foreach_non_finite_check_and_unscale_`` checks each value *before* multiplying
        and multiplies in float32 for bfloat16 leaves (its ``opmath`` type), rounding back.
        Non-floating leaves pass through unchanged.

        Raises:
            ValueError: a float16 gradient leaf (torch's "Attempting to unscale FP16
                gradients."): loss scaling is for float32 parameters ("16-mixed"); a
                float16 parameter's update would lose what the scaling kept.
        """
        inv_scale = mx.reciprocal(self.state["scale"])
        found_inf = mx.array(False)

        def one(g):
            nonlocal found_inf
            if not _is_floating(g):
                return g
            if g.dtype == mx.float16:
                raise ValueError("Attempting to unscale FP16 gradients (as torch.amp.GradScaler.unscale_).")
            found_inf = mx.logical_or(found_inf, mx.any(mx.logical_not(mx.isfinite(g))))
            if g.dtype == mx.bfloat16:
                return (g.astype(mx.float32) * inv_scale).astype(g.dtype)
            return g * inv_scale.astype(g.dtype)

        unscaled = tree_map(one, grads)
        return unscaled, found_inf

    def update(self, found_inf: mx.array) -> None:
        """Advance ``self.state`` after a step, as torch's ``_amp_update_scale_``:

        - non-finite gradients (``found_inf`` True): ``scale *= backoff_factor``,
          ``growth_tracker = 0``;
        - otherwise ``growth_tracker += 1``, and when it reaches ``growth_interval``:
          ``scale *= growth_factor`` unless that product is not finite (torch: "Do not grow
          the scale past fp32 bounds to inf"), and ``growth_tracker = 0``.

        Written with ``mx.where`` so that it traces inside ``mx.compile``; it assigns into
        the same dict (not a new one), which is what ``mx.compile(outputs=state)`` captures.
        """
        found_inf = found_inf.astype(mx.bool_)  # torch: `if (*found_inf_ptr)`, any non-zero
        scale = self.state["scale"]
        successful = self.state["growth_tracker"] + 1
        grow = successful == self.growth_interval
        grown = scale * self.growth_factor
        grown = mx.where(mx.isfinite(grown), grown, scale)
        clean_scale = mx.where(grow, grown, scale)
        clean_tracker = mx.where(grow, mx.array(0, dtype=mx.int32), successful)
        self.state["scale"] = mx.where(found_inf, scale * self.backoff_factor, clean_scale).astype(mx.float32)
        self.state["growth_tracker"] = mx.where(found_inf, mx.array(0, dtype=mx.int32), clean_tracker).astype(mx.int32)

    @staticmethod
    def select(found_inf: mx.array, new_tree: Any, old_tree: Any) -> Any:
        """``old_tree`` where ``found_inf``, else ``new_tree``, leaf by leaf (``mx.where``).

        torch's ``GradScaler.step`` does not call ``optimizer.step()`` when non-finite
        gradients were found: parameters and optimizer state (its step count included) stay
        as they were. Under ``mx.compile`` the update is always computed; this discards it.
        Non-array leaves are taken from ``new_tree``. ``old_tree`` must hold every key of
        ``new_tree``: an MLX optimizer fills its state lazily, so call ``optimizer.init(params)``
        before the first step (``mx.compile`` needs that state as an input anyway).

        Unlike Lightning, where an LR scheduler still steps after a skipped optimizer step, an
        MLX schedule reads ``optimizer.state["step"]``, which this keeps unchanged: after k
        skipped steps the schedule lags Lightning's by k.
        """
        return tree_map(
            lambda new, old: mx.where(found_inf, old, new) if isinstance(new, mx.array) else new,
            new_tree,
            old_tree,
        )

    def state_dict(self) -> dict[str, float | int]:
        """torch's ``GradScaler.state_dict()`` keys and Python types: ``scale`` (float),
        ``growth_factor`` (float), ``backoff_factor`` (float), ``growth_interval`` (int),
        ``_growth_tracker`` (int). Reads the state back to the host: call it outside a step."""
        return {
            "scale": float(self.state["scale"].item()),
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "_growth_tracker": int(self.state["growth_tracker"].item()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what ``state_dict()`` (or torch's ``GradScaler.state_dict()``) returned.

        The arrays are replaced inside the existing ``self.state`` dict, so a function
        already compiled with it as input sees the loaded values at its next call.

        Raises:
            RuntimeError: an empty dict (torch's message: a disabled scaler saves ``{}``).
            KeyError: a missing key.
        """
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler."
            )
        self.growth_factor = float(state_dict["growth_factor"])
        self.backoff_factor = float(state_dict["backoff_factor"])
        self.growth_interval = int(state_dict["growth_interval"])
        self.state["scale"] = mx.array(state_dict["scale"], dtype=mx.float32)
        self.state["growth_tracker"] = mx.array(state_dict["_growth_tracker"], dtype=mx.int32)
