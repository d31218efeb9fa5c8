"""The training step: the module's loss, its gradient, accumulation, clipping, precision and
the optimiser's update, compiled once with all the state it changes.

``mx.compile`` traces the step once with the model's state (parameters and BatchNorm
statistics), the optimiser's state, MLX's global random key, the loss scaler's state and
the accumulated gradients as inputs and outputs: every later call reads and writes them,
so dropout draws a fresh mask each step and nothing is baked into the graph. A trace that
fails (a host read such as ``.item()`` in ``training_step``) puts every piece of state
back as it was, so the next fit in the process works, and raises one error that names the
cause and the eager way out (``compile=False``).

What each Lightning flag means here, from lightning/pytorch/loops/optimization/automatic.py
and torch's ``clip_grad_norm_``/``clip_grad_value_``:

- ``accumulate_grad_batches=k``: each batch's loss is divided by k and the gradients summed;
  the optimiser steps on every k-th batch and on the epoch's last one.
- ``gradient_clip_val`` with ``"norm"``: every gradient times min(1, max_norm / (total 2-norm
  + 1e-6)); with ``"value"``: each entry clamped to [-v, v]. After unscaling (16-mixed).
- precision: see ``precision.py``; mixed precision computes with half copies of the float32
  weights, whose gradients come back float32; 16-mixed scales the loss and skips a step
  whose gradients are not finite (the step count and schedule still advance, as torch's
  scheduler does after GradScaler skips ``optimizer.step``).
- several processes: gradients averaged over them (``nn.average_gradients``); the logged
  values are means over the processes.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from cifar_mlx_adapter.lightning.callbacks import MisconfigurationException
from cifar_mlx_adapter.lightning.module import logging_to
from cifar_mlx_adapter.lightning.precision import Precision, cast_floating
from cifar_mlx_adapter.lightning.state import set_random_key

INDEX_BLOCK = 1024  # batch_idx arrays made at a time (TrainingStep._index)


class StepTraceError(RuntimeError):
    """``training_step`` could not be compiled; the state is as it was before the call."""


def clip_by_norm(grads, max_norm: float):
    """torch.nn.utils.clip_grad_norm_'s rule (2-norm over every gradient, coefficient clamped at 1)."""
    leaves = [g for _, g in tree_flatten(grads)]
    total = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for g in leaves))
    coef = mx.minimum(max_norm / (total + 1e-6), 1.0)
    return tree_map(lambda g: (g * coef).astype(g.dtype), grads)


def clip_by_value(grads, value: float):
    """torch.nn.utils.clip_grad_value_'s rule."""
    return tree_map(lambda g: mx.clip(g, -value, value), grads)


def _keep_step(new, old, found_inf):
    """The optimiser state after a skipped step: every entry as it was, except the step count."""
    if isinstance(new, dict):
        return {k: (new[k] if k == "step" else _keep_step(new[k], old.get(k), found_inf)) for k in new}
    if isinstance(new, (list, tuple)):
        return type(new)(_keep_step(n, o, found_inf) for n, o in zip(new, old))
    if isinstance(new, mx.array) and isinstance(old, mx.array):
        return mx.where(found_inf, old, new)
    return new


def array_leaves(tree) -> list[tuple[str, mx.array]]:
    """(name, array) of every array in a module's state; layers keep plain ints there too
    (a pooling layer's kernel size), which are not state."""
    return [(k, v) for k, v in tree_flatten(tree) if isinstance(v, mx.array)]


def assign_state(optimizer, state) -> None:
    """Put `state` into the optimiser's own state containers (in place: a compiled step reads
    its outputs from the containers it was traced with). A MultiOptimizer's state is
    {"states": [each part's]}."""
    if hasattr(optimizer, "optimizers"):
        for part, part_state in zip(optimizer.optimizers, state["states"]):
            assign_state(part, part_state)
        return
    own = optimizer.state
    own.clear()
    own.update(state)


class TrainingStep:
    """Builds and runs the step of one fit (remade when the trainable parameters change).

    Call ``step(batch, batch_idx, apply=True)`` per batch: with ``apply=False`` the
    gradients are only accumulated. Returns (loss float32 scalar, {name: value} logged,
    {key: array} of the arrays among the other entries of a dict ``training_step`` returned),
    all ``mx.array`` and unevaluated. ``extra_keys`` holds those other keys in the dict's order
    and ``extra_values`` the ones that are not arrays, as the trace saw them (a compiled step
    returns arrays only; eagerly, as the last step returned them).
    """

    def __init__(
        self,
        module,
        optimizer,
        precision: Precision,
        scaler=None,
        accumulate: int = 1,
        clip_val: float | None = None,
        clip_algorithm: str = "norm",
        group=None,
        compile: bool = True,
        log_sink=None,
    ):
        self.module, self.optimizer, self.precision, self.scaler = module, optimizer, precision, scaler
        self.accumulate, self.clip_val, self.clip_algorithm = accumulate, clip_val, clip_algorithm
        self.group = group
        self.world = group.size() if group is not None else 1
        self.compile = compile
        self.log_sink = log_sink  # the trainer's: receives (fx, name, value, options) at trace time
        self.log_items: dict[str, tuple] = {}  # name -> (hook, batch_size, options) of each logged value
        self.extra_keys: tuple = ()
        self.extra_values: dict = {}
        self.acc = {"grads": tree_map(mx.zeros_like, module.trainable_parameters())} if accumulate > 1 else {}
        # MLX fills the optimiser's state lazily at its first update: made here, it exists before the first
        # step, so a failed trace puts back a whole state (not one the next update takes as filled) and a
        # step skipped under 16-mixed puts back every entry (_keep_step); new parameters' entries too
        optimizer.init(module.trainable_parameters())
        self._outputs = None  # (loss, logs, extras) of the forward _loss ran last
        self._fns: dict[bool, object] = {}
        self._indices: list[mx.array] = []  # batch_idx as the compiled step's input, made ahead (_index)

    # ------------------------------------------------------------ the pieces
    def _loss(self, params, batch, batch_idx):
        module, precision = self.module, self.precision
        if precision.name.endswith("-mixed"):
            module.update(cast_floating(params, precision.compute_dtype))
        else:
            module.update(params)
        batch = cast_floating(batch, precision.compute_dtype) if precision.compute_dtype != mx.float32 else batch
        logs: dict[str, mx.array] = {}

        def sink(fx, name, value, batch_size=None, **options):
            self.log_items[name] = (fx, batch_size, options)  # fixed by the trace: read at every step
            logs[name] = value if isinstance(value, mx.array) else mx.array(value, dtype=mx.float32)

        with logging_to(module, "training_step", sink):
            out = module.training_step(batch, batch_idx)
        loss = out.get("loss") if isinstance(out, dict) else out
        if not isinstance(loss, mx.array) or loss.size != 1:
            raise MisconfigurationException(
                "training_step must return the loss, a scalar mx.array, or a dict with 'loss'; "
                f"got {type(out).__name__}"
            )
        loss = loss.astype(mx.float32).reshape(())
        scaled = loss / self.accumulate if self.accumulate > 1 else loss
        if self.scaler is not None:
            scaled = self.scaler.scale(scaled)
        # the dict's other entries go to on_train_batch_end's outputs, as Lightning's ClosureResult.extra
        extras = {}
        if isinstance(out, dict):
            self.extra_keys = tuple(k for k in out if k != "loss")
            extras = {k: out[k] for k in self.extra_keys if isinstance(out[k], mx.array)}
            self.extra_values = {k: out[k] for k in self.extra_keys if k not in extras}
        # the loss, logs and extras leave through self, not as value_and_grad's auxiliary outputs: mlx
        # 0.32's compile fails ("_Map_base::at") on two auxiliary outputs computed alike, as two values
        # logged from the same expression
        self._outputs = (loss, logs, extras)
        return scaled

    def _gradients(self, batch, batch_idx):
        params = self.module.trainable_parameters()
        _, grads = mx.value_and_grad(self._loss)(params, batch, batch_idx)
        (loss, logs, extras), self._outputs = self._outputs, None
        self.module.update(params)  # the float32 weights back where half copies computed the loss
        if self.group is not None:
            loss = mx.distributed.all_sum(loss, group=self.group) / self.world
            logs = {k: mx.distributed.all_sum(v, group=self.group) / self.world for k, v in logs.items()}
        return loss, logs, extras, grads

    def _accumulate_only(self, batch, batch_idx):
        loss, logs, extras, grads = self._gradients(batch, batch_idx)
        self.acc["grads"] = tree_map(mx.add, self.acc["grads"], grads)
        return loss, logs, extras

    def _apply(self, batch, batch_idx):
        loss, logs, extras, grads = self._gradients(batch, batch_idx)
        if self.acc:
            grads = tree_map(mx.add, self.acc["grads"], grads)
            self.acc["grads"] = tree_map(mx.zeros_like, grads)
        if self.group is not None:
            grads = nn.average_gradients(grads, group=self.group)
        found_inf = None
        if self.scaler is not None:
            grads, found_inf = self.scaler.unscale(grads)
        if self.clip_val:
            grads = (clip_by_norm if self.clip_algorithm == "norm" else clip_by_value)(grads, self.clip_val)
        if found_inf is None:
            self.optimizer.update(self.module, grads)
        else:
            params = self.module.trainable_parameters()
            old_state = tree_map(lambda x: x, self.optimizer.state)
            self.optimizer.update(self.module, grads)
            self.module.update(self.scaler.select(found_inf, self.module.trainable_parameters(), params))
            assign_state(self.optimizer, _keep_step(self.optimizer.state, old_state, found_inf))
            self.scaler.update(found_inf)
        return loss, logs, extras

    # ------------------------------------------------------------ compiling
    def state(self) -> list:
        """The containers of every piece of state the step reads and writes (the compiled step's
        inputs and outputs): evaluate them to finish a step."""
        state = [self.module.state, self.optimizer.state, mx.random.state, self.acc]
        if self.scaler is not None:
            state.append(self.scaler.state)
        return state

    def _function(self, apply: bool):
        if apply not in self._fns:
            fn = self._apply if apply else self._accumulate_only
            if self.compile:
                state = self.state()
                fn = mx.compile(fn, inputs=state, outputs=state)
                self._fns[apply] = _FirstCallGuard(fn, self, apply)
            else:
                self._fns[apply] = fn
        return self._fns[apply]

    def eager(self, batch, batch_idx, apply: bool = True):
        """The step without compiling (batch_idx an int), for telling errors apart."""
        index = int(batch_idx.item()) if isinstance(batch_idx, mx.array) else batch_idx
        out = (self._apply if apply else self._accumulate_only)(batch, index)
        mx.eval(out)
        return out

    def __call__(self, batch, batch_idx: int, apply: bool = True):
        fn = self._fns.get(apply) or self._function(apply)
        return fn(batch, self._index(batch_idx) if self.compile else batch_idx)

    def _index(self, batch_idx: int) -> mx.array:
        """batch_idx as an int32 scalar array, made INDEX_BLOCK at a time ahead of its step and
        kept. An array made just before the compiled call that takes it cost the MLP example's
        ~200 us step a few microseconds on a 2-core CPU: scripts/benchmark.py's single-step
        interleaved MLP row read 0.916 before this (runs/benchmarks-lightning-6744afd.json)
        and 0.926 after (runs/benchmarks-lightning-ff6e032.log)."""
        indices = self._indices
        if batch_idx >= len(indices):
            start = len(indices)
            indices.extend(mx.array(i, dtype=mx.int32) for i in range(start, batch_idx + INDEX_BLOCK))
        return indices[batch_idx]

    def snapshot(self):
        """References to every piece of state a failed trace could leave as placeholders."""
        return (
            array_leaves(self.module.state),
            tree_map(lambda x: x, self.optimizer.state),
            mx.random.state[0],  # the array itself (a trace replaces the list's entry): read only to restore
            dict(self.acc),
            dict(self.scaler.state) if self.scaler is not None else None,
        )

    def restore(self, saved) -> None:
        module_state, optimizer_state, key, acc, scaler_state = saved
        self.module.update(tree_unflatten(module_state), strict=False)
        assign_state(self.optimizer, optimizer_state)
        set_random_key(key)
        self.acc.clear()
        self.acc.update(acc)
        if scaler_state is not None:
            self.scaler.state.clear()
            self.scaler.state.update(scaler_state)


class _FirstCallGuard:
    """Calls a compiled step; its first call (the trace) restores the state if it fails."""

    def __init__(self, fn, step: TrainingStep, apply: bool):
        self.fn, self.step, self.apply, self.traced = fn, step, apply, False

    def __call__(self, *args):
        if self.traced:
            return self.fn(*args)
        saved = self.step.snapshot()
        try:
            out = self.fn(*args)
        except Exception as err:
            self.step.restore(saved)
            if isinstance(err, MisconfigurationException):  # the user's mistake, not the trace's
                raise
            # the same step run eagerly once: an error it raises too is the step's own (a shape,
            # a bad log), shown as it is; only an error of tracing alone earns the advice below
            try:
                self.step.eager(*args, apply=self.apply)
            except Exception as eager_err:
                raise eager_err from None
            finally:
                self.step.restore(saved)
            cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StepTraceError(
                f"training_step could not be compiled ({type(err).__name__}: {cause}); a host read such as "
                ".item(), float() or Python branching on an array's value cannot be traced: "
                "MLXTrainer(compile=False) runs the step eagerly"
            ) from err
        self.traced = True
        self.step._fns[self.apply] = self.fn  # traced: later calls go straight to the compiled step
        return out
