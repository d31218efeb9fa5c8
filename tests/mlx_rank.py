"""One rank of a multi-process MLX run, for tests/test_mlx_distributed.py (and the helpers
that test uses to start ranks and to build the same training in one process).

    python tests/mlx_rank.py steps SPEC_JSON    # MLXTrainer fit + test; saves weights and results
    python tests/mlx_rank.py general SPEC_JSON  # the general MLXTrainer fits examples/mlp_numpy.py's MLP
    python tests/mlx_rank.py cli OUT -- ARGV...  # scripts/fit_mlx.py's main(ARGV), writes recorded

The ranks are started as ``mlx.launch`` starts them (``MLX_RANK`` and a ring hostfile in
``MLX_HOSTFILE``), but by the test itself, so each rank's exit status is its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ used by the test
def free_ports(n: int) -> list[int]:
    """`n` TCP ports free on 127.0.0.1 now (the OS picks them)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_ranks(args: list[str], folder: Path, world: int = 2, env: dict | None = None, rank_env=None):
    """Start `world` ranks of ``python tests/mlx_rank.py *args`` joined by the ring backend on
    127.0.0.1; returns the Popen objects (stdout and stderr to files in `folder`)."""
    hostfile = folder / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(world)]))
    procs = []
    for rank in range(world):
        e = {
            **os.environ,
            **(env or {}),
            "MLX_RANK": str(rank),
            "MLX_HOSTFILE": str(hostfile),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        }
        e.update((rank_env or {}).get(rank, {}))
        out, err = open(folder / f"rank{rank}.out", "w"), open(folder / f"rank{rank}.err", "w")
        procs.append(
            subprocess.Popen([sys.executable, str(Path(__file__)), *args], env=e, stdout=out, stderr=err, cwd=ROOT)
        )
    return procs


def wait_ranks(procs, folder: Path, timeout: float = 240) -> tuple[list[int], list[str]]:
    """(exit status, stderr text) of each rank; kills every rank still running `timeout` s after
    the wait began (one deadline for all), so a hung exchange fails its test (killed: -9) in
    minutes. The slowest two-process test takes about 20 s on a 2-core CPU."""
    deadline, codes = time.monotonic() + timeout, []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes, [(folder / f"rank{r}.err").read_text() for r in range(len(procs))]


def build(spec: dict, batch_size: int):
    """(CIFARData, MLXClassifier) of `spec` with `batch_size` images per process: the
    recipe of spec["model"] with spec["recipe"]'s overrides, weights from spec["weights"]."""
    import mlx.core as mx

    from cifar_lightning.core.data import CIFARData
    from cifar_lightning.core.recipes import Recipe, get_recipe
    from cifar_mlx_adapter import MLXClassifier
    from cifar_mlx_adapter.weights import load_weights

    recipe = {**get_recipe(spec["model"]).to_dict(), **spec.get("recipe", {}), "batch_size": batch_size}
    data = CIFARData(
        "cifar10",
        spec["data"],
        batch_size=batch_size,
        seed=recipe["seed"],
        eval_batch_size=spec.get("eval_batch_size"),
        train_subset=spec.get("train_subset"),
        augmentation=Recipe(**recipe).augmentation,
    )
    module = MLXClassifier(spec["model"], 10, recipe=recipe, model_kwargs=spec.get("model_kwargs"))
    if spec.get("weights"):
        import numpy as np

        with np.load(spec["weights"]) as z:
            load_weights(module.model, {k: mx.array(z[k]) for k in z.files})
    return data, module


# ------------------------------------------------------------- run as a rank
def steps(spec: dict) -> None:
    """Fit `spec` under MLXTrainer in this rank's group, test it, save this rank's weights
    (rank{r}.npz) and test figures (rank{r}.json) into spec["out"]."""
    import numpy as np

    from cifar_mlx_adapter import MLXTrainer
    from cifar_mlx_adapter.distributed import join_processes
    from cifar_mlx_adapter.weights import mlx_state

    group = join_processes()
    data, module = build(spec, spec["batch_size"])
    out = Path(spec["out"])
    trainer = MLXTrainer(
        max_epochs=module.recipe.epochs,
        default_root_dir=out / "trainer",
        enable_progress_bar=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        group=group,
    )
    trainer.fit(module, data)
    val = trainer.validate(module, data, verbose=False)  # with rank 0's BatchNorm statistics on every rank
    test = trainer.test(module, data, verbose=False)
    rank = group.rank()
    np.savez(out / f"rank{rank}.npz", **{k: np.array(v) for k, v in mlx_state(module.model).items()})
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "world": trainer.world_size,
                "steps": trainer.global_step,
                "acc": test["test/acc"],
                "loss": test["test/loss"],
                "confusion": test["confusion_matrix"].tolist(),
                "acc_no_tta": test.get("test/acc_no_tta"),
                "per_class": test["per_class_accuracy"].tolist(),
                "val_acc": val["val/acc"],
                "val_loss": val["val/loss"],
            }
        )
    )


def general(spec: dict) -> None:
    """examples/mlp_numpy.py's MLP under the general ``cifar_mlx_adapter.lightning.MLXTrainer``
    in this rank's group, from the weights in spec["weights"], on the example's training rows
    (spec["rows"] of them) cut into batches of spec["batch_size"]: rank r of N takes batches
    r, r+N, ... Saves this rank's weights (rank{r}.npz) and steps (rank{r}.json) into spec["out"]."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten, tree_unflatten

    sys.path.insert(0, str(ROOT / "examples"))
    from mlp_numpy import MLP, batches, blobs

    from cifar_mlx_adapter.distributed import join_processes
    from cifar_mlx_adapter.lightning import MLXTrainer

    group = join_processes()
    model = MLP()
    with np.load(spec["weights"]) as z:
        model.update(tree_unflatten([(k, mx.array(z[k])) for k in z.files]))
    trainer = MLXTrainer(
        max_epochs=spec["epochs"],
        group=group,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, batches(*blobs(spec["rows"], seed=1), spec["batch_size"]))
    out, rank = Path(spec["out"]), group.rank()
    np.savez(out / f"rank{rank}.npz", **{k: np.array(v) for k, v in tree_flatten(model.parameters())})
    (out / f"rank{rank}.json").write_text(json.dumps({"world": trainer.world_size, "steps": trainer.global_step}))


def cli(out: Path, argv: list[str]) -> None:
    """scripts/fit_mlx.py's main(argv), noting every file this rank opens for writing, makes,
    moves or removes (Python's audit events) into out/writes-rank{r}.json at exit.
    $CIFAR_TEST_FAIL_AT_STEP "N:raise" or "N:kill" makes this rank raise ValueError or
    kill itself (SIGKILL) after global step N."""
    import atexit
    import signal

    from cifar_lightning.cli.fit_mlx import main
    from cifar_mlx_adapter import Callback

    rank = os.environ.get("MLX_RANK", "0")
    writes: list[str] = []

    def hook(event, args):
        if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
            writes.append(str(args[0]))
        elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.unlink", "os.rmdir", "shutil.rmtree"):
            writes.extend(str(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike)))

    record = out / f"writes-rank{rank}.json"
    atexit.register(lambda: record.write_text(json.dumps(writes)))
    sys.addaudithook(hook)

    class Fail(Callback):
        def __init__(self, step: int, how: str):
            self.step, self.how = step, how

        def on_train_batch_end(self, trainer, module, batch_idx):
            if trainer.global_step == self.step:
                if self.how == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ValueError(f"planted failure at step {self.step}")

    fail = os.environ.get("CIFAR_TEST_FAIL_AT_STEP")
    callbacks = (Fail(int(fail.split(":")[0]), fail.split(":")[1]),) if fail else ()
    main(argv, callbacks=callbacks)


if __name__ == "__main__":
    from cifar_mlx_adapter.blas import restart_with_openblas

    restart_with_openblas(sys.argv)  # as scripts/fit_mlx.py: MLX's CPU build is ~12x faster with OpenBLAS
    if sys.argv[1] == "steps":
        steps(json.loads(sys.argv[2]))
    elif sys.argv[1] == "general":
        general(json.loads(sys.argv[2]))
    else:
        cli(Path(sys.argv[2]), sys.argv[4:])
