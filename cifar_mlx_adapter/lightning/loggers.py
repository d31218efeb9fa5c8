"""Lightning's loggers for ``MLXTrainer``: the ``Logger`` protocol, a ``CSVLogger`` that writes the
same files as Lightning's, and ``Trainer(logger=...)``'s resolution rules.

Copied from Lightning 2.6 (public source, github.com/Lightning-AI/pytorch-lightning, ``src/lightning/``):
``fabric/loggers/logger.py`` and ``pytorch/loggers/logger.py`` (``Logger``),
``fabric/loggers/csv_logs.py`` and ``pytorch/loggers/csv_logs.py`` (``CSVLogger``, ``_ExperimentWriter``),
``pytorch/core/saving.py`` (``save_hparams_to_yaml``), ``pytorch/trainer/connectors/logger_connector/
logger_connector.py`` (``_LoggerConnector.configure_logger``) and ``pytorch/trainer/trainer.py``
(``Trainer.log_dir``). tests/test_mlx_loggers.py writes the same calls through Lightning's own
``CSVLogger`` and compares the files byte for byte.

Any object with Lightning's logger methods (``log_metrics``, ``log_hyperparams``, ``save``,
``finalize``) works as a logger here: Lightning's own ``TensorBoardLogger``, ``CSVLogger``,
``MLFlowLogger`` or ``WandbLogger`` objects can be passed to ``MLXTrainer(logger=...)`` where
Lightning is installed. ``MLXTrainer`` hands them plain Python numbers (as Lightning's trainer does
after ``convert_tensors_to_scalars``), never torch tensors.

This module imports neither torch nor Lightning (an MLX-only install has neither), and not MLX
either: metric values are converted by duck typing (``.item()``), which covers ``mx.array``,
numpy scalars and torch tensors alike.
"""

from __future__ import annotations

import csv
import numbers
import os
import warnings
from argparse import Namespace
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

import yaml

__all__ = ["CSVLogger", "Logger", "log_dir_of", "resolve_loggers"]

# the methods a trainer calls on every logger; an object that has them is a logger (duck typing, as in Lightning,
# whose trainer never checks isinstance(Logger) when it logs)
LOGGER_METHODS = ("log_metrics", "log_hyperparams", "save", "finalize")


class Logger:
    """Base class for loggers: Lightning's ``Logger`` (``lightning.fabric.loggers.logger.Logger`` with
    ``lightning.pytorch.loggers.logger.Logger``'s ``after_save_checkpoint`` and ``save_dir``), with no-op defaults
    instead of abstract methods, so a subclass overrides only what it writes.

    It is a protocol, not a requirement: ``MLXTrainer`` accepts ANY object with ``log_metrics(metrics, step)``,
    ``log_hyperparams(params)``, ``save()`` and ``finalize(status)`` (``log_graph`` and ``after_save_checkpoint`` are
    called where present), Lightning's own loggers included.

    As in Lightning, a trainer calls loggers on rank 0 only (Lightning decorates these methods ``@rank_zero_only``;
    here the trainer does not call them on other ranks).
    """

    @property
    def name(self) -> str | None:
        """The experiment name (Lightning: abstract; here None)."""
        return None

    @property
    def version(self) -> int | str | None:
        """The experiment version (Lightning: abstract; here None)."""
        return None

    @property
    def root_dir(self) -> str | None:
        """The folder holding every version of the experiment, or None when nothing is saved locally."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The folder of this version of the experiment, or None when nothing is saved locally."""
        return None

    @property
    def save_dir(self) -> str | None:
        """The folder logs are saved under, or None when nothing is saved locally."""
        return None

    @property
    def group_separator(self) -> str:
        """The separator that groups metric names into sections (Lightning's default, ``"/"``)."""
        return "/"

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record ``metrics`` (name → number) at ``step``. A no-op here."""

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record hyperparameters (a dict or an ``argparse.Namespace``). A no-op here."""

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the model's graph. A no-op here (as in Lightning's base class)."""

    def save(self) -> None:
        """Write out what has been recorded. A no-op here."""

    def finalize(self, status: str) -> None:
        """End the experiment (``status``: e.g. ``"success"``, ``"failed"``); calls ``save()``, as Lightning's does."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Called after a checkpoint callback saves a checkpoint. A no-op here (as in Lightning's base class)."""


def _scalar(name: str, value: Any) -> Any:
    """A metric value as Lightning's CSV writer receives it from Lightning's trainer: a Python number.
    Lightning's ``_ExperimentWriter`` calls ``.item()`` on a torch ``Tensor``; here anything with ``.item()``
    (a 0-d ``mx.array``, a numpy scalar, a torch tensor) is converted, so a float32 value is written with the
    digits of the float32 (``0.10000000149011612``), as a float32 torch tensor's would be. Other values (Python
    numbers, strings) are written as they are, as Lightning writes them."""
    item = getattr(value, "item", None)
    if item is None or not callable(item):
        return value
    try:
        return item()
    except (ValueError, TypeError, RuntimeError, IndexError):
        raise ValueError(
            f"CSVLogger.log_metrics: metric {name!r} must be a number or a one-element array, "
            f"got {type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}"
        ) from None


class _ExperimentWriter:
    """Writes ``metrics.csv`` and ``hparams.yaml`` in ``log_dir``: Lightning's ``_ExperimentWriter``
    (``lightning/fabric/loggers/csv_logs.py``) with ``ExperimentWriter.log_hparams``
    (``lightning/pytorch/loggers/csv_logs.py``), on the local file system only (Lightning's goes through fsspec).

    The CSV's columns are every key logged so far plus ``step``, sorted by name; rows are buffered and appended
    on ``save()``, and when a saved batch brings new keys the whole file is rewritten under the new header (earlier
    rows get empty cells for the new columns).
    """

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self.hparams: dict[str, Any] = {}
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        self._check_log_dir_exists()
        os.makedirs(log_dir, exist_ok=True)

    def log_metrics(self, metrics_dict: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer one row: the metrics plus ``step`` (the buffer's length when None, as in Lightning)."""
        if step is None:
            step = len(self.metrics)
        metrics = {k: _scalar(k, v) for k, v in metrics_dict.items()}
        metrics["step"] = step
        self.metrics.append(metrics)

    def log_hparams(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the hyperparameters so far and rewrite ``hparams.yaml`` with all of them."""
        self.hparams.update(params)
        _save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def save(self) -> None:
        """Append the buffered rows to ``metrics.csv`` (rewriting it first if the header grew) and empty the buffer."""
        if not self.metrics:
            return
        new_keys = self._record_new_keys()
        file_exists = os.path.isfile(self.metrics_file_path)
        if new_keys and file_exists:
            # the header is the file's first line: new columns mean every earlier row is written again under it
            self._rewrite_with_new_header(self.metrics_keys)
        # newline="": the csv module writes its own "\r\n" line ends (as Lightning's file does)
        with open(self.metrics_file_path, "a" if file_exists else "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            if not file_exists:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics = []

    def _record_new_keys(self) -> set[str]:
        current_keys = set().union(*self.metrics)
        new_keys = current_keys - set(self.metrics_keys)
        self.metrics_keys.extend(new_keys)
        self.metrics_keys.sort()
        return new_keys

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as file:
            metrics = list(csv.DictReader(file))
        with open(self.metrics_file_path, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(metrics)

    def _check_log_dir_exists(self) -> None:
        # only an explicitly chosen version reaches here with its folder in use (CSVLogger claims a fresh folder for
        # an automatic one): Lightning warns and deletes that version's metrics.csv, and so does this
        if os.path.exists(self.log_dir) and os.listdir(self.log_dir):
            warnings.warn(
                f"Experiment logs directory {self.log_dir} exists and is not empty."
                " Previous log files in this directory will be deleted when the new ones are saved!",
                UserWarning,
                stacklevel=2,
            )
            if os.path.isfile(self.metrics_file_path):
                os.remove(self.metrics_file_path)


def _save_hparams_to_yaml(path: str, hparams: dict[str, Any]) -> None:
    """Lightning's ``save_hparams_to_yaml`` (``lightning/pytorch/core/saving.py``) without OmegaConf: each value
    that PyYAML cannot dump (``TypeError``/``ValueError``) is left out with a warning, an ``Enum`` is written as
    its name, and the rest goes through ``yaml.dump`` (keys sorted, PyYAML's default ``Dumper``, so a tuple is
    ``!!python/tuple``). Where omegaconf is installed Lightning saves with ``OmegaConf.save`` instead (keys in
    insertion order); this always writes the file Lightning writes without omegaconf."""
    allowed = {}
    for k, v in hparams.items():
        try:
            v = v.name if isinstance(v, Enum) else v
            yaml.dump(v)
        except (TypeError, ValueError):
            warnings.warn(
                f"Skipping '{k}' parameter because it is not possible to safely dump to YAML.",
                UserWarning,
                stacklevel=3,
            )
            # Lightning replaces the value by its type's name in the hparams it keeps (so a later log_hyperparams
            # call writes that name); copied so that both write the same file after the same calls
            hparams[k] = type(v).__name__
        else:
            allowed[k] = v
    with open(path, "w", newline="", encoding="utf-8") as fp:
        yaml.dump(allowed, fp)


class CSVLogger(Logger):
    """Log to ``save_dir/name/version_N/``: ``metrics.csv`` and ``hparams.yaml``, as Lightning's
    ``lightning.pytorch.loggers.CSVLogger`` (``lightning/pytorch/loggers/csv_logs.py``, built on
    ``lightning/fabric/loggers/csv_logs.py``) writes them.

    Args:
        save_dir: the folder holding every experiment (``str`` or ``os.PathLike``; local paths only).
        name: the experiment's folder under ``save_dir`` (default ``"lightning_logs"``); None or ``""`` puts the
            versions in ``save_dir`` itself.
        version: an ``int`` N writes to ``version_N``, a ``str`` to a folder of that name; None (default) takes the
            next free ``version_N`` (one more than the largest N of the ``version_N`` folders there, else 0).
        prefix: put before every metric name, joined by ``"-"``.
        flush_logs_every_n_steps: rows are written to ``metrics.csv`` when ``(step + 1)`` is a multiple of this,
            and on ``save()``/``finalize()``.

    Files: ``metrics.csv`` has one column per metric name logged plus ``step``, sorted by name; each
    ``log_metrics`` call is one row, empty where a metric was not logged; floats are written as Python's ``repr``
    (``0.10000000149011612`` for a float32 value); the file is rewritten when new names arrive. ``hparams.yaml``
    holds every hyperparameter logged so far (``yaml.dump``, keys sorted).

    Differences from Lightning: a version chosen automatically is never shared. Lightning picks the version when
    it is first read, and two loggers that both read theirs before either writes get the same number, the second
    deleting the first's ``metrics.csv``; here the folder is claimed when the first file is written, and if
    another logger claimed the number in between this one moves to the next free number with a warning. An
    explicit ``version`` whose folder holds files behaves as Lightning's: a warning, and its ``metrics.csv`` is
    deleted. No fsspec (remote URLs raise ValueError); no ``rank_zero_only`` (the trainer calls loggers on rank 0).

    Raises:
        ValueError: ``save_dir`` is not a local path, ``version`` is not None/int/str, ``prefix`` is not a str,
            ``flush_logs_every_n_steps`` is not an int >= 1; from ``log_metrics``: a metric that is not a number or
            a one-element array, or a ``step`` that is not an int; from ``log_hyperparams``: params that are not a
            mapping or a ``Namespace``.
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        try:
            save_dir = os.fspath(save_dir)
        except TypeError:
            raise ValueError(f"CSVLogger: save_dir must be a path (str or os.PathLike), got {save_dir!r}") from None
        if isinstance(save_dir, bytes) or "://" in save_dir:
            raise ValueError(f"CSVLogger: save_dir must be a local folder path (no fsspec URLs here), got {save_dir!r}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"CSVLogger: name must be a str or None, got {name!r}")
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise ValueError(f"CSVLogger: version must be an int, a str or None, got {version!r}")
        if not isinstance(prefix, str):
            raise ValueError(f"CSVLogger: prefix must be a str, got {prefix!r}")
        n = flush_logs_every_n_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"CSVLogger: flush_logs_every_n_steps must be an int >= 1, got {n!r}")
        self._save_dir = save_dir
        self._name = name or ""
        self._version = version
        self._auto_version = version is None
        self._prefix = prefix
        self._flush_logs_every_n_steps = n
        self._experiment: _ExperimentWriter | None = None

    @property
    def name(self) -> str:
        """The experiment's folder name (``""`` when ``name`` was None)."""
        return self._name

    @property
    def version(self) -> int | str:
        """The version: the one given, else the next free ``version_N`` number, chosen when first read."""
        if self._version is None:
            self._version = self._get_next_version()
        return self._version

    @property
    def save_dir(self) -> str:
        """The ``save_dir`` given."""
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``save_dir/name`` (``save_dir/`` when the name is empty, as ``os.path.join`` makes it in Lightning)."""
        return os.path.join(self.save_dir, self.name)

    @property
    def log_dir(self) -> str:
        """``root_dir/version_N`` for an int version, ``root_dir/<version>`` for a str one."""
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)

    @property
    def experiment(self) -> _ExperimentWriter:
        """The writer behind the files; creating it creates ``log_dir`` (as reading Lightning's does)."""
        if self._experiment is not None:
            return self._experiment
        os.makedirs(self.root_dir, exist_ok=True)
        if self._auto_version:
            self._claim_version()
        self._experiment = _ExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    def log_hyperparams(self, params: Mapping[str, Any] | Namespace | None = None) -> None:
        """Merge ``params`` (a mapping, a ``Namespace`` or None) into ``hparams.yaml``, which is written at once."""
        if params is None:
            params = {}
        elif isinstance(params, Namespace):
            params = vars(params)
        elif not isinstance(params, Mapping):
            raise ValueError(
                f"CSVLogger.log_hyperparams: params must be a dict or an argparse.Namespace, got {type(params).__name__}"
            )
        self.experiment.log_hparams(params)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer one row of ``metrics`` at ``step`` (None: the number of rows not yet written, as in Lightning);
        the buffer is written when ``(step + 1) % flush_logs_every_n_steps == 0``."""
        if not isinstance(metrics, Mapping):
            raise ValueError(f"CSVLogger.log_metrics: metrics must be a dict of name to number, got {metrics!r}")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, numbers.Integral):
                raise ValueError(f"CSVLogger.log_metrics: step must be an int or None, got {step!r}")
            step = int(step)
        if self._prefix:
            metrics = {f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}": v for k, v in metrics.items()}
        if step is None:
            step = len(self.experiment.metrics)
        self.experiment.log_metrics(metrics, step)
        if (step + 1) % self._flush_logs_every_n_steps == 0:
            self.save()

    def save(self) -> None:
        """Write the buffered rows to ``metrics.csv`` (creating ``log_dir`` if nothing has yet)."""
        self.experiment.save()

    def finalize(self, status: str) -> None:
        """Write the buffered rows; nothing at all if this logger never wrote (as Lightning's)."""
        if self._experiment is None:
            return
        self.save()

    def _get_next_version(self) -> int:
        """One more than the largest N of the ``version_N`` folders in ``root_dir`` (N all digits), else 0."""
        versions_root = os.path.join(self._save_dir, self.name)
        if not os.path.isdir(versions_root):
            return 0
        existing = []
        for entry in os.listdir(versions_root):
            if os.path.isdir(os.path.join(versions_root, entry)) and entry.startswith("version_"):
                # Lightning's rule: the text between the first and second "_" (so version_3_old counts as 3)
                number = entry.split("_")[1]
                if number.isdigit():
                    existing.append(int(number))
        return max(existing) + 1 if existing else 0

    def _claim_version(self) -> None:
        """Create ``log_dir`` for an automatically chosen version, moving to the next free number if another logger
        created it since this one chose it (os.mkdir fails on an existing folder, so two loggers cannot both
        claim one)."""
        chosen = self.version
        while True:
            try:
                os.mkdir(self.log_dir)
                break
            except FileExistsError:
                # a version_N folder or file appeared: max() with +1 also steps past a *file* of that name
                self._version = max(self._get_next_version(), int(self._version) + 1)
        if self._version != chosen:
            warnings.warn(
                f"CSVLogger: version_{chosen} in {self.root_dir} was created by another logger after this one chose"
                f" it; writing to version_{self._version} instead",
                UserWarning,
                stacklevel=3,
            )


def _default_root(default_root_dir: str | os.PathLike | None) -> str:
    """``Trainer.default_root_dir``: the current folder when None, with ``~`` expanded and the path normalised."""
    if default_root_dir is None:
        return os.getcwd()
    try:
        root = os.fspath(default_root_dir)
    except TypeError:
        raise ValueError(f"default_root_dir must be a path or None, got {default_root_dir!r}") from None
    if isinstance(root, bytes):
        raise ValueError(f"default_root_dir must be a str path, got {default_root_dir!r}")
    return os.path.normpath(os.path.expanduser(root))


def _check_logger(obj: Any) -> Any:
    missing = [m for m in LOGGER_METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise ValueError(
            f"logger must be a bool, None, a logger (an object with {', '.join(LOGGER_METHODS)}) or an iterable of"
            f" loggers; got {type(obj).__name__} {obj!r}, which has no {', '.join(missing)}"
        )
    return obj


def resolve_loggers(logger: Any = True, default_root_dir: str | os.PathLike | None = None) -> list:
    """``Trainer(logger=...)``'s loggers, by Lightning's rules (``_LoggerConnector.configure_logger`` in
    ``lightning/pytorch/trainer/connectors/logger_connector/logger_connector.py``, and ``Trainer.__init__``'s
    ``None`` → ``True``):

    - ``True`` or ``None``: ``[CSVLogger(default_root_dir)]``. Lightning's default is a ``TensorBoardLogger`` when
      tensorboard or tensorboardX is installed, else this ``CSVLogger``; here it is always the ``CSVLogger``
      (``default_root_dir/lightning_logs/version_N``), as Lightning's is without tensorboard.
    - ``False`` (or anything else falsy, e.g. ``[]``): ``[]``.
    - one logger: ``[logger]``; an iterable of loggers: ``list(logger)``.

    ``default_root_dir``: None is the current folder; ``~`` is expanded and the path normalised, as
    ``Trainer.default_root_dir`` does. A logger is any object with ``log_metrics``, ``log_hyperparams``, ``save`` and
    ``finalize`` (Lightning's own loggers included).

    Raises:
        ValueError: a str, bytes or mapping (iterable, but not of loggers), or an object or element that lacks a
            logger method.
    """
    if logger is None:
        logger = True
    if isinstance(logger, (str, bytes, Mapping)):
        # iterable, so Lightning would make a list of its characters/keys; never what was meant
        raise ValueError(f"logger must be a bool, None, a logger or an iterable of loggers, got {logger!r}")
    if not logger:
        return []
    if logger is True:
        return [CSVLogger(save_dir=_default_root(default_root_dir))]
    if isinstance(logger, Iterable):
        return [_check_logger(x) for x in logger]
    return [_check_logger(logger)]


def _is_lightning_dir_logger(logger: Any) -> bool:
    """Whether ``Trainer.log_dir`` takes this logger's ``log_dir`` (its ``isinstance(TensorBoardLogger, CSVLogger)``),
    decided without importing Lightning: our ``CSVLogger``, or a class of those names from Lightning's modules."""
    if isinstance(logger, CSVLogger):
        return True
    return any(
        cls.__name__ in ("CSVLogger", "TensorBoardLogger")
        and cls.__module__.startswith(("lightning.pytorch.loggers", "pytorch_lightning.loggers"))
        for cls in type(logger).__mro__
    )


def log_dir_of(loggers: list, default_root_dir: str | os.PathLike | None = None) -> str | None:
    """``Trainer.log_dir`` (``lightning/pytorch/trainer/trainer.py``): the first logger's ``log_dir`` when it is a
    CSV or TensorBoard logger, the first logger's ``save_dir`` for any other (None where it has none), and
    ``default_root_dir`` (normalised as in ``resolve_loggers``) when there is no logger."""
    if loggers:
        first = loggers[0]
        if _is_lightning_dir_logger(first):
            return first.log_dir
        return getattr(first, "save_dir", None)
    return _default_root(default_root_dir)
