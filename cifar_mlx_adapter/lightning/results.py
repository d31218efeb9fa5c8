"""What the module logged in one loop, reduced as Lightning reduces it.

As Lightning's ``_ResultCollection`` (lightning/pytorch/trainer/connectors/logger_connector/
result.py): each value logged under a name keeps its last step value and its epoch
reduction (a mean weighted by batch size, a sum, a max or a min); ``metrics(on_step)``
gives the three views Lightning gives: ``log`` (to the loggers), ``callback`` (what
callbacks such as ModelCheckpoint monitor) and ``pbar`` (the progress bar), with the
``_step``/``_epoch`` suffixes for a value logged both ways. Values stay ``mx.array`` on
the device until a view is read, so logging makes the host wait only where a number is
written somewhere. A step's logging only stores arrays: the epoch's reduction is made
when it is read (in the order the values came, so the same sums as one made step by
step), and the batch size is found only for an epoch mean, as Lightning's
``_extract_batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx


@dataclass
class LoggedValue:
    """One name's options, its latest step value and its epoch's values (reduced when read)."""

    fx: str
    name: str
    on_step: bool
    on_epoch: bool
    prog_bar: bool
    logger: bool
    reduce_fx: str
    sync_dist: bool
    step_value: mx.array | None = None
    total: mx.array | None = None  # weighted sum (mean), sum, max or min of the values reduced so far
    weight: float = 0.0  # summed batch sizes, for the weighted mean
    computed: mx.array | None = None
    fresh: bool = field(default=False)  # logged since the last reset
    pending: list = field(default_factory=list)  # epoch values (mean: value and batch size) not yet in total

    def __post_init__(self) -> None:
        self.forked = self.on_step and self.on_epoch
        self.weighted = self.on_epoch and self.reduce_fx == "mean"  # needs each value's batch size

    def forked_name(self, on_step: bool) -> str:
        return f"{self.name}_{'step' if on_step else 'epoch'}" if self.forked else self.name

    def update(self, value: mx.array, batch_size) -> None:
        """Store one step's value; `batch_size` is an int, or a callable giving it (called only
        for an epoch mean)."""
        if value.dtype != mx.float32 or value.ndim:
            value = value.astype(mx.float32).reshape(())
        self.step_value = value
        self.fresh = True
        self.computed = None
        if not self.on_epoch:
            return
        if self.weighted:
            if callable(batch_size):
                batch_size = batch_size()
            self.pending.append((value, batch_size))
            self.weight += batch_size
        else:
            self.pending.append(value)

    def set_step(self, value: mx.array) -> None:
        """``update`` of a value logged per step only that is already a float32 scalar (a compiled
        step's, whose type its trace fixes): nothing to convert, nothing kept for the epoch."""
        self.step_value = value
        self.fresh = True

    def _reduce_pending(self) -> mx.array:
        """``total`` with the pending values folded in, one by one in logged order."""
        total = self.total
        if self.reduce_fx == "mean":
            for value, batch_size in self.pending:
                term = value * batch_size
                total = term if total is None else total + term
        elif self.reduce_fx == "sum":
            for value in self.pending:
                total = value if total is None else total + value
        elif self.reduce_fx == "max":
            for value in self.pending:
                total = value if total is None else mx.maximum(total, value)
        else:
            for value in self.pending:
                total = value if total is None else mx.minimum(total, value)
        self.pending.clear()
        self.total = total
        return total

    def compute(self, group=None) -> mx.array:
        """The epoch's value; with `group` and ``sync_dist`` reduced over the processes first."""
        if self.computed is None:
            total, weight = self._reduce_pending(), mx.array(self.weight, dtype=mx.float32)
            if group is not None and self.sync_dist:
                if self.reduce_fx in ("mean", "sum"):
                    total = mx.distributed.all_sum(total, group=group)
                    weight = mx.distributed.all_sum(weight, group=group)
                elif self.reduce_fx == "max":
                    total = mx.distributed.all_max(total, group=group)
                else:
                    total = mx.distributed.all_min(total, group=group)
            self.computed = total / weight if self.reduce_fx == "mean" else total
        return self.computed

    def reset(self) -> None:
        self.step_value = self.total = self.computed = None
        self.pending.clear()
        self.weight = 0.0
        self.fresh = False


class ResultCollection(dict):
    """``{fx.name: LoggedValue}`` of one loop (training, or one evaluation run)."""

    def __init__(self, training: bool, group=None):
        super().__init__()
        self.training = training
        self.group = group

    def item(self, fx: str, name: str, **options) -> LoggedValue:
        """The entry of `name` logged from hook `fx`, made at its first log (in logging order)."""
        key = f"{fx}.{name}"
        item = self.get(key)
        if item is None:
            clash = [v for v in self.values() if v.name == name and v.fx != fx and v.fresh]
            if clash:
                raise ValueError(f"self.log({name!r}) was logged from both {clash[0].fx} and {fx}: use two names")
            item = self[key] = LoggedValue(fx=fx, name=name, **options)
        return item

    def log(self, fx: str, name: str, value, *, batch_size, **options) -> None:
        """Store `value`; `batch_size` an int or a callable giving it (see ``LoggedValue.update``)."""
        if not isinstance(value, mx.array):
            value = mx.array(value, dtype=mx.float32)
        self.item(fx, name, **options).update(value, batch_size)

    def metrics(self, on_step: bool) -> dict[str, dict[str, mx.array]]:
        """{"log", "callback", "pbar"}: name -> 0-d float32 ``mx.array`` (unevaluated)."""
        out = {"log": {}, "callback": {}, "pbar": {}}
        for item in self.values():
            if not item.fresh:
                continue
            if on_step:
                if not item.on_step:
                    continue
                value = item.step_value
            else:
                if not item.on_epoch:
                    continue
                value = item.compute(self.group)
            forked = item.forked_name(on_step)
            if item.logger:
                out["log"][forked] = value
            # callback metrics never take an evaluation's step values (Lightning's rule)
            if self.training or (item.on_epoch and not on_step):
                out["callback"][item.name] = value
                out["callback"][forked] = value
            if item.prog_bar:
                out["pbar"][forked] = value
        return out

    def reset(self) -> None:
        for item in self.values():
            item.reset()


def batch_size_of(batch) -> int:
    """The length of the batch's first array (Lightning's ``extract_batch_size``); 1 if none."""
    if hasattr(batch, "shape") and len(batch.shape) > 0:
        return int(batch.shape[0])
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = batch_size_of(item)
            if size:
                return size
        return 1
    return 1


def as_floats(metrics: dict) -> dict[str, float]:
    """Every value as a Python float (the host waits for the device here)."""
    arrays = [v for v in metrics.values() if isinstance(v, mx.array)]
    if arrays:
        mx.eval(arrays)
    return {k: float(v.item()) if isinstance(v, mx.array) else float(v) for k, v in metrics.items()}
