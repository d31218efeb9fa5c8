"""A run as a Python value: every setting of one training or evaluation, in both frameworks.

``RunConfig`` is what the command line's flags become (``cifar_lightning.cli.flags``) and
what a Python caller builds directly; ``validate`` checks it before anything is read or
made, with messages that name the flag (``--epochs must be positive, got 0``), so a bad
value reads the same from the command line and from Python. Where a field is None the
recipe's own value holds (``RecipeOverrides``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from cifar_lightning.core.errors import UsageError


@dataclass(frozen=True)
class RunConfig:
    """One run's settings (the flags of scripts/fit.py and scripts/fit_mlx.py, by field name).

    Units are the recipe's (see ``--help``): epochs may be fractional; batch_size is per
    process; lr and weight_decay in the recipe's units. `argv` is the command line the
    config came from (None: a Python call; the record then spells the flags of the fields
    that differ from their defaults, ``flags``)."""

    model: str = "small_cnn"
    dataset: str = "cifar10"
    optimizer: str | None = None
    muon_dtype: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    seed: int | None = None
    data_dir: str = "data"
    download: bool = True
    val_size: int = 0
    train_subset: int | None = None
    output_dir: str | None = None
    overwrite: bool = False
    resume: str | None = None
    weights: str | None = None
    test_only: bool = False
    tta: bool = True
    dropout: float | None = None
    log_every_n_steps: int | None = None
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    limit_test_batches: int | None = None
    wait: bool = True
    lock_file: str | None = None
    argv: tuple[str, ...] | None = None

    def model_kwargs(self) -> dict:
        """Architecture options from the settings, passed to build_model in either framework."""
        return {} if self.dropout is None else {"dropout": self.dropout}

    def data_kwargs(self, recipe) -> dict:
        """The keyword arguments of ``CIFARData`` and of the torch ``CIFARDataModule`` that
        this run's settings and its recipe give (the augmentation apart: each takes it in
        its own form)."""
        return {
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "batch_size": recipe.batch_size,
            "val_size": self.val_size,
            "seed": recipe.seed,
            "train_subset": self.train_subset,
            "download": self.download,
        }

    def recipe_overrides(self) -> dict:
        """The recipe fields this run sets (None: the recipe's own)."""
        out = {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed")}
        if not self.tta:
            out["tta"] = False
        return out

    def log_every(self, total_steps: int) -> int:
        """log_every_n_steps, or about 20 rows a run (at most every 50 steps)."""
        return self.log_every_n_steps or max(1, min(50, total_steps // 20))

    def flags(self) -> list[str]:
        """The flags that give this config on the command line: one for each field that
        differs from its default (booleans as their flags: --no-download), `argv` aside."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "argv" or value == f.default:
                continue
            if f.name in NEGATED:
                out.append(NEGATED[f.name])
            elif isinstance(value, bool):
                out.append(flag_name(f.name))
            else:
                out += [flag_name(f.name), str(value)]
        return out


NEGATED = {"download": "--no-download", "tta": "--no-tta", "wait": "--no-wait"}  # fields whose flag turns them off


def flag_name(field_name: str) -> str:
    """The command-line flag of a config field: batch_size -> --batch-size."""
    return NEGATED.get(field_name) or "--" + field_name.replace("_", "-")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def validate(config: RunConfig) -> None:
    """Check every setting before anything runs; raises UsageError naming the flag."""
    from cifar_lightning.core.weights import check_weights_file

    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float):
            _check(math.isfinite(value), f"{flag_name(f.name)} must be a finite number, got {value}")
    for name in (
        "epochs",
        "batch_size",
        "lr",
        "log_every_n_steps",
        "train_subset",
        "limit_train_batches",
        "limit_test_batches",
    ):
        value = getattr(config, name)
        _check(value is None or value > 0, f"{flag_name(name)} must be positive, got {value}")
    c = config
    _check(
        c.limit_val_batches is None or c.limit_val_batches >= 0,
        f"--limit-val-batches must be 0 or more batches, got {c.limit_val_batches}",
    )
    _check(c.momentum is None or 0 <= c.momentum < 1, f"--momentum must lie in [0, 1), got {c.momentum}")
    _check(c.weight_decay is None or c.weight_decay >= 0, f"--weight-decay must be 0 or more, got {c.weight_decay}")
    _check(c.seed is None or c.seed >= 0, f"--seed must be 0 or more, got {c.seed}")
    _check(c.val_size >= 0, f"--val-size must be 0 or more images, got {c.val_size}")
    if c.dropout is not None:
        _check(c.model == "small_cnn", f"--dropout applies to --model small_cnn only, not {c.model}")
        _check(0 <= c.dropout < 1, f"--dropout must lie in [0, 1), got {c.dropout}")
    _check(not (c.test_only and not c.weights), "--test-only needs --weights PATH (a checkpoint of either framework)")
    _check(not (c.resume and c.weights), "--resume and --weights exclude each other: --resume restores the weights too")
    for name in ("weights", "resume"):
        path = getattr(c, name)
        _check(path is None or Path(path).is_file(), f"--{name} {path}: no such file")
    if c.weights:  # by content: a file of no weights format is refused before the data are read
        check_weights_file(c.weights, "--weights")
    _check(
        c.output_dir is None or not Path(c.output_dir).is_file(),
        f"--output-dir {c.output_dir} is a file; expected a folder (new, or one to --overwrite)",
    )
