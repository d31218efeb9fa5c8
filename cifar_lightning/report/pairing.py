"""Paired runs: the MLX run that started from a PyTorch run's initial weights
(``--weights <PyTorch run>/checkpoints/initial.pt``) with its seed, read from the commands
the runs recorded.
"""

from __future__ import annotations

import posixpath
import shlex
from pathlib import PurePosixPath

from cifar_lightning.core.run.folder import CHECKPOINTS

# where fit.py saves the weights it starts from, and the copy in MLX's layout cifar-compare
# writes beside it for the MLX run (read without torch)
INITIAL_WEIGHTS = ((CHECKPOINTS, "initial.pt"), (CHECKPOINTS, "initial.npz"))


def weights_argument(run: dict) -> str | None:
    """The path a run's recorded ``command`` gave to ``--weights`` (``--weights PATH`` or
    ``--weights=PATH``); None without one, or without a recorded command."""
    command = run.get("command")
    if not command:
        return None
    try:
        argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    except ValueError:  # unbalanced quotes: read it as plain words
        argv = str(command).split()
    for i, arg in enumerate(argv):
        if arg == "--weights" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--weights="):
            return arg.split("=", 1)[1]
    return None


def initial_weights_folder(run: dict) -> str | None:
    """The run folder whose ``checkpoints/initial.pt`` (or its .npz copy) the run's ``--weights`` loaded, as
    written in its command (normalised: no "./", no trailing "/"); None when the run loaded
    no weights or other ones (a final checkpoint, an .npz)."""
    weights = weights_argument(run)
    if weights is None:
        return None
    path = PurePosixPath(posixpath.normpath(weights))
    return path.parent.parent.as_posix() if path.parts[-2:] in INITIAL_WEIGHTS else None


def same_folder(written: str, folder: str) -> bool:
    """Whether a folder as a command wrote it (relative to the repository, where the runners
    are started, or absolute) names a run's folder (``_path``: relative to the repository as
    ``scripts/report.py`` reads it, or absolute). Both normalised; an absolute path names a
    relative one when its trailing parts are that relative path."""
    a, b = PurePosixPath(posixpath.normpath(written)), PurePosixPath(posixpath.normpath(folder))
    if a == b:
        return True
    if a.is_absolute() == b.is_absolute():
        return False
    absolute, relative = (a, b) if a.is_absolute() else (b, a)
    parts = relative.parts
    return bool(parts) and ".." not in parts and absolute.parts[-len(parts) :] == parts


def paired_runs(group: dict[str, list[dict]]) -> list[tuple[dict, dict]]:
    """(PyTorch run, MLX run) pairs of a ``pytorch_vs_mlx_groups`` group, by seed: an MLX
    run is paired with the PyTorch run of the same seed whose folder's
    ``checkpoints/initial.pt`` its command loaded with ``--weights`` (``initial_weights_folder``,
    ``same_folder``). Same initial weights and seed mean the same batches in both frameworks.
    Each run is in at most one pair (one run per seed per framework)."""
    pairs = []
    for m in group.get("mlx", []):
        folder = initial_weights_folder(m)
        if folder is None:
            continue
        twins = [t for t in group.get("pytorch", []) if t["seed"] == m["seed"] and same_folder(folder, t["_path"])]
        if twins:
            pairs.append((twins[0], m))
    seed_order = lambda p: (0, p[0]["seed"]) if isinstance(p[0]["seed"], int) else (1, 0)  # noqa: E731
    return sorted(pairs, key=lambda p: (*seed_order(p), p[0]["_path"]))
