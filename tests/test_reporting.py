"""Results.md generation: which runs count toward a target, which pair up as PyTorch vs MLX,
the gap verdict, times and images/s, headings and plots, and the committed report being current.

Every test below failed on the code before these fixes, and was run again against each fault
listed for it, planted alone in ``cifar_lightning/core/run/files.py`` (since split into
``run_logs``, ``grouping``, ``pairing``, ``significance`` and ``results``) or ``scripts/report.py``
(and failed each time):

- test_targets_count_only_runs_of_the_recipe_itself: the old filter (any finished run of
  the recipe's length: --lr/--val-size, --no-tta, --dropout runs counted); the tta key
  skipped; the val_size check removed; keys outside the recipe (dropout) ignored.
- test_targets_count_runs_logged_before_units_and_status_were_recorded: the old filter;
  a missing status read as not finished; the legacy-units translation removed.
- test_targets_and_run_rows_say_which_code_trained_them: no reason given for an unknown
  commit; "+changes" dropped; no code column in the table of all runs.
- test_apple_gpu_runs_pair_across_frameworks: the key on the raw accelerator name
  (mps != metal); cpu put in the Apple GPU class; the machine left out of the key.
- test_gap_verdict_is_welchs_test: the old verdict (Welch's standard error, pooled degrees
  of freedom, 1.96 above 30); Student's pooled test (equal_var=True); alpha halved to
  0.025; the critical value doubled.
- test_gap_verdict_says_when_no_verdict_is_possible: a verdict from one run per side;
  no special case for zero spread on both sides.
- test_a_single_run_shows_its_value_without_a_spread: "± 0.00" for one run.
- test_images_per_s_only_from_runs_that_log_training_time_alone: images/s from an old
  train_time_s; from an evaluation; the note on old spans left out; "0 s" for an evaluation.
- test_comparison_headings_are_unique: the old heading (model, data, length, hardware);
  no hyper-parameters named when folder and code agree; two groups sharing one plot file.
- test_report_all_writes_its_plots_beside_its_output: plots written beside the runs
  whatever --output; no plot written while the report names one.
- test_results_name_files_that_exist: the targets text naming cifar_lightning/recipes.py.

The paired comparison (PyTorch and MLX runs from the same initial weights) was tested the
same way, each fault planted alone in ``cifar_lightning/core/run/files.py``:

- test_mlx_runs_pair_with_the_pytorch_run_whose_initial_weights_they_loaded: pairing by
  seed only, ignoring which folder's initial.pt --weights named, and ignoring --weights
  altogether (the MLX run from another folder's initial.pt, and the one without --weights,
  became pairs); the sign of the differences flipped; the zero-spread case removed.
- test_paired_verdict_is_the_paired_t_test: ttest_ind (Welch's, and Student's) in place of
  ttest_rel (t and p no longer the textbook paired figures); the sign of the differences
  flipped (PyTorch - MLX: "-0.20", t = -3.46), in the verdict alone and everywhere.
- test_pairing_finds_a_gap_that_seed_noise_hides: ttest_ind in place of ttest_rel (no real
  gap found); the sign flipped.
- test_paired_verdict_says_when_no_verdict_is_possible: the one-pair case removed (a t-test
  from one pair); the zero-spread case removed (a t from float noise in equal
  differences); the sign flipped.
"""

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_lightning.core.recipes import get_recipe, sgd_args
from cifar_lightning.report.grouping import pytorch_vs_mlx_groups, recipe_runs
from cifar_lightning.report.logs import code_text, train_images_per_s
from cifar_lightning.report.pairing import paired_runs
from cifar_lightning.report.results import pytorch_vs_mlx_section, render_results
from cifar_lightning.report.significance import gap_verdict, mean_std, paired_verdict

ROOT = Path(__file__).resolve().parents[1]
CPU = {"cpu": "CPU", "cpu_count": 2, "accelerator": "cpu", "os": "Linux", "machine": "x86_64"}
MAC = {"cpu": "Apple M2 Max", "cpu_count": 12, "os": "Darwin 24.1.0", "machine": "arm64"}
COMMIT = "5c33a4d195b89e03ef70887c314db61ccacada75"


def run(framework, seed, acc, epochs=2, lr=0.05, path=None, hardware=CPU, **fields):
    """A small_cnn run.json as load_runs returns it (new time fields unless overridden)."""
    return {
        "framework": framework,
        "model": "small_cnn",
        "dataset": "cifar10",
        "seed": seed,
        "epochs": epochs,
        "hardware": dict(hardware),
        "status": "finished",
        "code": {"commit": COMMIT, "dirty": False},
        "hyperparameters": {
            "lr": lr,
            "seed": seed,
            "batch_size": 100,
            "total_steps": 10,
            "precision": "32-true" if framework == "pytorch" else None,
        },
        "train_time_s": 10.0,
        "validation_time_s": 1.0,
        "test_time_s": 0.5,
        "test_accuracy": acc,
        "per_class_accuracy": {"cat": acc, "dog": acc},
        "parameters": 1,
        "_path": path or f"runs/x/{framework}-{seed}",
        **fields,
    }


def recipe_run(seed, acc, framework="pytorch", path=None, code=COMMIT, **overrides):
    """A run of the fast recipe on the full training set, as today's runners record it;
    `overrides` change hyper-parameters (as a flag would)."""
    hp = {
        **get_recipe("fast").to_dict(),
        "seed": seed,
        "val_size": 0,
        "train_subset": None,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "limit_test_batches": None,
        "total_steps": 476,
        **overrides,
    }
    return {
        "framework": framework,
        "model": "fast",
        "dataset": "cifar10",
        "seed": seed,
        "epochs": hp["epochs"],
        "hardware": {**CPU, "accelerator": "cuda", "gpu": "NVIDIA H200"},
        "status": "finished",
        "code": {"commit": code, "dirty": False} if code else None,
        "hyperparameters": hp,
        "train_time_s": 60.0,
        "validation_time_s": 3.0,
        "test_time_s": 1.0,
        "test_accuracy": acc,
        "test_accuracy_no_tta": acc - 0.007,
        "per_class_accuracy": {"cat": acc},
        "parameters": 1,
        "_path": path or f"runs/fast/{framework}-s{seed}-{len(overrides)}",
    }


def targets_table(runs) -> str:
    return render_results(runs).split("## Accuracy targets")[1].split("\n## ")[0]


def fast_row(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| fast | cifar10 |") and "pytorch" in line)


def test_runs_pair_up_only_when_everything_but_framework_and_seed_agrees():
    runs = [
        run("pytorch", 1, 0.70),
        run("pytorch", 2, 0.72),
        run("mlx", 1, 0.71),
        run("mlx", 2, 0.69),
        run("mlx", 3, 0.5, lr=0.1),
        run("pytorch", 4, 0.1, epochs=0),
    ]
    groups = pytorch_vs_mlx_groups(runs)
    assert len(groups) == 1
    (group,) = groups.values()
    assert sorted(r["seed"] for r in group["pytorch"]) == [1, 2]  # the evaluation (epochs 0) is left out
    assert sorted(r["seed"] for r in group["mlx"]) == [1, 2]  # the lr=0.1 run is another experiment
    text = "\n".join(pytorch_vs_mlx_section(runs))
    assert "| pytorch | 2 | 1, 2 | 71.00% ± 1.41 |" in text and "| mlx | 2 | 1, 2 | 70.00% ± 1.41 |" in text
    assert "| cat | 71.00% | 70.00% | -1.00 |" in text


# ---------------------------------------------------------------- fault 1: targets


def test_targets_count_only_runs_of_the_recipe_itself():
    two = [recipe_run(0, 0.9397), recipe_run(1, 0.9397)]
    assert "| 2 | 93.97% | 93.97% | no |" in fast_row(targets_table(two))
    others = [
        recipe_run(2, 0.99, lr=46.0, val_size=45000),  # another lr, 5000 training images
        recipe_run(3, 0.99, val_size=5000),  # 45000 training images
        recipe_run(4, 0.99, tta=False),  # --no-tta
        recipe_run(5, 0.99, train_subset=1000),
        recipe_run(6, 0.99, limit_test_batches=2),  # part of the test set
        recipe_run(7, 0.99, dropout=0.0),  # an architecture option
        recipe_run(8, 0.99) | {"status": "interrupted"},
    ]
    for other in others:
        row = fast_row(targets_table([*two, other]))
        assert "| 2 | 93.97% | 93.97% | no |" in row, (other["hyperparameters"], row)
    assert [r["seed"] for r in recipe_runs([*two, *others], "fast", "cifar10")] == [0, 1]


def muon_run(seed, acc, **overrides):
    """A run of the fast net's Muon recipe as the runners record it (through JSON, as read back)."""
    run = recipe_run(seed, acc)
    run["hyperparameters"] = json.loads(
        json.dumps(
            {
                **get_recipe("fast", "muon").to_dict(),
                "recipe": "fast_muon",
                "seed": seed,
                "val_size": 0,
                "train_subset": None,
                "limit_train_batches": None,
                "limit_val_batches": 0,
                "limit_test_batches": None,
                "total_steps": 200,
                **overrides,
            }
        )
    )
    run["epochs"] = 8
    return run


def test_muon_runs_count_toward_their_own_target_only():
    """A fast_muon run (validation skipped: --limit-val-batches 0 changes no weight) counts for
    the fast_muon target, not for fast's; one with another Muon lr or a cut test set counts for none."""
    runs = [muon_run(0, 0.935), muon_run(1, 0.941), recipe_run(2, 0.94)]
    assert [r["seed"] for r in recipe_runs(runs, "fast_muon", "cifar10")] == [0, 1]
    assert [r["seed"] for r in recipe_runs(runs, "fast", "cifar10")] == [2]
    other_lr = muon_run(3, 0.99)
    other_lr["hyperparameters"]["optimizers"][0]["lr"] = 0.3
    cut = muon_run(4, 0.99, limit_test_batches=2)
    assert recipe_runs([other_lr, cut], "fast_muon", "cifar10") == []
    row = next(line for line in targets_table(runs).splitlines() if line.startswith("| fast_muon |"))
    assert "| pytorch | 2 | 93.80% | 94.10% | no |" in row


def test_repeated_runs_of_a_recipe_group_across_how_their_parts_were_logged():
    """Muon runs logged before optimiser parts were trimmed to their kind's fields (every
    field written) repeat today's runs of the same recipe; the table names the recipe."""
    old = muon_run(0, 0.9397)
    old["hyperparameters"]["optimizers"] = [
        {
            **dict(
                kind="sgd",
                roles=[],
                lr=0.0,
                weight_decay=0.0,
                momentum=0.0,
                nesterov=False,
                beta2=0.999,
                eps=1e-08,
                ns_steps=3,
                ns_dtype="bfloat16",
                decay_epochs=0.0,
            ),
            **part,
        }
        for part in old["hyperparameters"]["optimizers"]
    ]
    text = render_results([old, muon_run(1, 0.9390)])
    table = text.split("## Repeated runs")[1].split("\n## ")[0]
    assert (
        "| pytorch | fast_muon | cifar10 | 8 (200 steps) | " in table
        and "| 2 | 0, 1 | 93.93% | 93.90% | 93.97% |" in table
    )


def test_targets_count_runs_logged_before_units_and_status_were_recorded():
    """The fast recipe's runs before `units` was recorded logged lr and weight decay in
    torch's units, and before `status` existed run.json was written only at the end of a
    finished run: such runs (runs/fast-h200/e9.9-*) are runs of the recipe."""
    recipe = get_recipe("fast")
    sgd = sgd_args(recipe)
    legacy = recipe_run(0, 0.94, code=None, lr=sgd.lr, weight_decay=sgd.weight_decay)
    del legacy["hyperparameters"]["units"], legacy["status"]
    other = recipe_run(1, 0.99, code=None, lr=2 * sgd.lr, weight_decay=sgd.weight_decay)
    del other["hyperparameters"]["units"]
    assert [r["seed"] for r in recipe_runs([legacy, other], "fast", "cifar10")] == [0]
    committed = json.loads((ROOT / "runs" / "fast-h200" / "e9.9-s0" / "run.json").read_text())
    committed["_path"] = "runs/fast-h200/e9.9-s0"
    assert recipe_runs([committed], "fast", "cifar10") == [committed]


def test_targets_and_run_rows_say_which_code_trained_them():
    old = targets_table([recipe_run(0, 0.94, code=None), recipe_run(1, 0.94, code=None)])
    assert "code" in old.split("|---")[0]  # a column header
    assert "unknown (recorded before commits were logged)" in fast_row(old)
    new = fast_row(targets_table([recipe_run(0, 0.94), recipe_run(1, 0.94, code="abcdef1234")]))
    assert "5c33a4d" in new and "abcdef1" in new
    dirty = recipe_run(0, 0.94) | {"code": {"commit": COMMIT, "dirty": True}}
    assert code_text(dirty) == "5c33a4d+changes"
    assert code_text(recipe_run(0, 0.94, code=None)) == "unknown"
    assert code_text(recipe_run(0, 0.94) | {"code": {"commit": None, "dirty": None}}) == "unknown"
    rows = render_results([dirty]).split("## All runs")[1].split("\n## ")[0]
    assert "code" in rows.split("|---")[0] and "| 5c33a4d+changes |" in rows


# ---------------------------------------------------------------- fault 2: pairing


def test_apple_gpu_runs_pair_across_frameworks():
    torch_mps = [run("pytorch", s, 0.7, hardware={**MAC, "accelerator": "mps"}) for s in (1, 2)]
    mlx_metal = [run("mlx", s, 0.7, hardware={**MAC, "accelerator": "metal"}) for s in (1, 2)]
    (group,) = pytorch_vs_mlx_groups([*torch_mps, *mlx_metal]).values()
    assert len(group["pytorch"]) == len(group["mlx"]) == 2
    assert "Apple GPU" in "\n".join(pytorch_vs_mlx_section([*torch_mps, *mlx_metal]))
    torch_cpu = [run("pytorch", s, 0.7, hardware={**MAC, "accelerator": "cpu"}) for s in (1, 2)]
    assert pytorch_vs_mlx_groups([*torch_cpu, *mlx_metal]) == {}  # a CPU run is no GPU run's twin
    nvidia = [
        run("pytorch", 1, 0.7, hardware={**CPU, "accelerator": "cuda", "gpu": "NVIDIA H200"}),
        run("mlx", 1, 0.7, hardware={**CPU, "accelerator": "cuda"}),
    ]
    (group,) = pytorch_vs_mlx_groups(nvidia).values()
    assert "NVIDIA GPU" in "\n".join(pytorch_vs_mlx_section(nvidia))
    elsewhere = run("mlx", 1, 0.7, hardware={**MAC, "cpu": "Apple M1", "accelerator": "metal"})
    assert pytorch_vs_mlx_groups([*torch_mps, elsewhere]) == {}  # another machine


# ---------------------------------------------------------------- fault 3: the gap verdict


def test_gap_verdict_is_welchs_test():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    # Welch: t = 3.0 on 1 degree of freedom (critical value 12.7), p = 0.20
    verdict = gap_verdict([0.60, 0.70], [0.80] * 8)
    assert "not established" in verdict and "Welch" in verdict and "p = 0.2" in verdict
    # R's t.test (Welch by default) on these numbers: t = -1.8325, df = 17.9, p-value = 0.08356
    ts1, ts2 = [11, 9, 10, 11, 10, 12, 9, 11, 12, 9], [11, 13, 10, 13, 12, 9, 11, 12, 12, 11]
    verdict = gap_verdict(ts2, ts1)
    assert "t = -1.83" in verdict and "17.9 degrees of freedom" in verdict and "p = 0.0836" in verdict
    assert "not established" in verdict
    # equal spreads and sizes (3 and 3): 4 degrees of freedom, where t(0.975, 4) = 2.776 (any t table)
    a = [0.70, 0.71, 0.72]  # standard deviation 0.01: standard error of the difference 0.01 * sqrt(2/3)
    se = 0.01 * (2 / 3) ** 0.5
    above = gap_verdict(a, [x + 2.80 * se for x in a])
    below = gap_verdict(a, [x + 2.75 * se for x in a])
    assert "4.0 degrees of freedom" in above
    assert "a real gap" in above and "not established" in below


def test_gap_verdict_says_when_no_verdict_is_possible():
    assert "no verdict" in gap_verdict([0.70], [0.71]) and "one run" in gap_verdict([0.70], [0.71])
    assert "no verdict" in gap_verdict([0.70, 0.72], [0.71])
    assert "no verdict" in gap_verdict([0.70, 0.70], [0.72, 0.72])  # no spread on either side
    assert "a real gap" not in gap_verdict([0.70, 0.70], [0.72, 0.72])


# ---------------------------------------------------------------- paired runs: same initial weights


def torch_run(seed, acc, folder="runs/pair", **fields):
    """A fit.py run in `folder`/pytorch-seed<seed>, its command as runs.run_command records it."""
    path = f"{folder}/pytorch-seed{seed}"
    command = f"python scripts/fit.py --model small_cnn --epochs 2 --seed {seed} --accelerator cpu --output-dir {path}"
    return run("pytorch", seed, acc, path=path, command=command, **fields)


def mlx_run(seed, acc, weights=None, folder="runs/pair", **fields):
    """A fit_mlx.py run in `folder`/mlx-seed<seed>; `weights`: its --weights argument (none when None)."""
    path = f"{folder}/mlx-seed{seed}"
    flag = f" --weights {weights}" if weights is not None else ""
    command = f"python scripts/fit_mlx.py --model small_cnn --epochs 2 --seed {seed} --cpu{flag} --output-dir {path}"
    return run("mlx", seed, acc, path=path, command=command, **fields)


def pair(seed, torch_acc, mlx_acc, folder="runs/pair"):
    """A PyTorch run and the MLX run started from its checkpoints/initial.pt with the same seed."""
    t = torch_run(seed, torch_acc, folder, test_loss=1.0 + seed / 100)
    return t, mlx_run(seed, mlx_acc, f"{t['_path']}/checkpoints/initial.pt", folder, test_loss=2.0 + seed / 100)


def section(runs) -> str:
    return "\n".join(pytorch_vs_mlx_section(runs))


def test_mlx_runs_pair_with_the_pytorch_run_whose_initial_weights_they_loaded():
    torch = {s: torch_run(s, 0.70 + s / 100) for s in (1, 2, 3, 4, 5, 6)}
    mlx = [
        mlx_run(1, 0.72, "./runs/pair/pytorch-seed1/checkpoints/initial.pt"),  # "./": the same folder
        mlx_run(2, 0.73, "runs/other/pytorch-seed2/checkpoints/initial.pt"),  # another folder's weights, same seed
        mlx_run(3, 0.74),  # no --weights: its own initial weights
        mlx_run(4, 0.75, "/home/me/cifar/runs/pair/pytorch-seed4/checkpoints/initial.pt"),  # absolute
        mlx_run(5, 0.76, "runs/pair/pytorch-seed5/checkpoints/final.ckpt"),  # trained weights, not the start
        mlx_run(6, 0.77, "pair/pytorch-seed6/checkpoints/initial.pt"),  # relative to another folder
    ]
    mlx[5]["command"] = mlx[5]["command"].replace("--weights ", "--weights=")  # the flag's other spelling
    (group,) = pytorch_vs_mlx_groups([*torch.values(), *mlx]).values()
    assert [(t["seed"], m["seed"]) for t, m in paired_runs(group)] == [(1, 1), (4, 4)]
    assert all(t is torch[m["seed"]] for t, m in paired_runs(group))
    # a run folder read as an absolute path (report.py --runs outside the repository)
    far = torch_run(7, 0.7) | {"_path": "/data/checkout/runs/pair/pytorch-seed7"}
    (group,) = pytorch_vs_mlx_groups([far, mlx_run(7, 0.7, "runs/pair/pytorch-seed7/checkpoints/initial.pt")]).values()
    assert len(paired_runs(group)) == 1
    # cifar-compare's MLX run reads initial.pt's copy in MLX's layout (no torch in its process)
    npz = mlx_run(7, 0.7, "runs/pair/pytorch-seed7/checkpoints/initial.npz")
    (group,) = pytorch_vs_mlx_groups([far, npz]).values()
    assert len(paired_runs(group)) == 1
    # the weights of the PyTorch run of another seed: not the same batches, no pair
    other_seed = mlx_run(2, 0.7, "runs/pair/pytorch-seed1/checkpoints/initial.pt")
    (group,) = pytorch_vs_mlx_groups([torch[1], other_seed]).values()
    assert paired_runs(group) == []
    # a group with some runs paired: the pairs' table and test, then Welch's test over every run
    text = section([*torch.values(), *mlx])
    assert "Paired runs:" in text and "same batches" in text and "dropout" in text
    assert "| 1 | 71.00% | 72.00% | +1.00 | n/a | n/a | `runs/pair/pytorch-seed1` | `runs/pair/mlx-seed1` |" in text
    assert "| 4 | 74.00% | 75.00% | +1.00 |" in text
    assert sum(line.startswith("| 2 |") or line.startswith("| 3 |") for line in text.splitlines()) == 0
    assert "Paired, the 2 pairs above: +1.00 points; no verdict: every pair differs by the same amount" in text
    assert "every run of the table taken as an independent sample (8 of them in no pair): " in text
    assert "Welch's t-test" in text
    # no pair at all: today's line, unchanged
    plain = section([torch[3], mlx[2]])
    assert "Paired" not in plain and "MLX minus PyTorch, test accuracy: +1.00 points; no verdict" in plain


def test_paired_verdict_is_the_paired_t_test():
    torch = [0.700, 0.650, 0.750]
    mlx = [0.701, 0.652, 0.753]  # MLX - PyTorch: 0.1, 0.2, 0.3 points
    d = [100 * (m - t) for t, m in zip(torch, mlx)]
    n = len(d)
    t_stat = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(n))  # textbook: 2 sqrt(3) = 3.464
    df = n - 1
    # Student's t with 2 degrees of freedom has the closed-form CDF 1/2 + t / (2 sqrt(2 + t^2)),
    # so the two-sided p-value is 1 - t / sqrt(2 + t^2) = 0.0742
    p = 1 - t_stat / math.sqrt(2 + t_stat**2)
    assert round(t_stat, 2) == 3.46 and round(p, 4) == 0.0742
    verdict = paired_verdict(torch, mlx)
    assert verdict.startswith("+0.20 points; paired t-test (two-sided, 95%)")
    assert f"t = {t_stat:.2f}, {df} degrees of freedom, p = {p:.3g}" in verdict
    assert "not established" in verdict  # p = 0.074 > 0.05
    runs = [r for s, (a, b) in enumerate(zip(torch, mlx)) for r in pair(s + 1, a, b)]
    text = section(runs)
    assert "| 1 | 70.00% | 70.10% | +0.10 | 1.0100 | 2.0100 |" in text
    assert "| 2 | 65.00% | 65.20% | +0.20 | 1.0200 | 2.0200 |" in text
    assert "| 3 | 75.00% | 75.30% | +0.30 | 1.0300 | 2.0300 |" in text
    assert "over 3 pairs: +0.20 ± 0.10 points" in text
    assert f"MLX minus PyTorch, test accuracy, paired: {verdict}." in text
    assert "Welch" not in text  # every run is paired: the paired test is the verdict


def test_pairing_finds_a_gap_that_seed_noise_hides():
    """Seeds far apart (60%, 70%, 80%), MLX consistently 1.0-1.2 points above its PyTorch twin:
    against the seed-to-seed spread the gap is nothing, against the within-pair spread it is real."""
    torch = [0.60, 0.70, 0.80]
    mlx = [0.610, 0.711, 0.812]
    assert "not established" in gap_verdict(torch, mlx)  # Welch: t = 0.13
    d = [100 * (m - t) for t, m in zip(torch, mlx)]
    t_stat = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(3))  # 1.1 / (0.1 / sqrt 3) = 19.05
    p = 1 - t_stat / math.sqrt(2 + t_stat**2)  # two degrees of freedom, as above: 0.0027
    verdict = paired_verdict(torch, mlx)
    assert f"t = {t_stat:.2f}, 2 degrees of freedom, p = {p:.3g}: a real gap" in verdict
    text = section([r for s, (a, b) in enumerate(zip(torch, mlx)) for r in pair(s + 1, a, b)])
    assert "| +1.00 |" in text and "| +1.10 |" in text and "| +1.20 |" in text
    assert "MLX minus PyTorch, test accuracy, paired: +1.10 points; paired t-test" in text and "a real gap" in text


def test_paired_verdict_says_when_no_verdict_is_possible():
    one = paired_verdict([0.70], [0.71])
    assert one.startswith("+1.00 points") and "no verdict from one pair" in one
    text = section(list(pair(1, 0.70, 0.71)))
    assert "over 1 pair: +1.00 points (one pair: no spread)" in text and "no verdict from one pair" in text
    same = paired_verdict([0.71, 0.72, 0.73], [0.72, 0.73, 0.74])  # +1 point each, up to float noise
    assert "no verdict" in same and "same amount" in same and "a real gap" not in same
    assert "no verdict" in paired_verdict([0.70, 0.72], [0.70, 0.72])  # equal runs: no difference at all
    with pytest.raises(ValueError):
        paired_verdict([0.7, 0.7], [0.7])


# ---------------------------------------------------------------- fault 4: one run


def test_a_single_run_shows_its_value_without_a_spread():
    runs = [run("pytorch", 1, 0.7302), run("mlx", 1, 0.7305)]
    text = "\n".join(pytorch_vs_mlx_section(runs))
    assert "| pytorch | 1 | 1 | 73.02% |" in text and "| mlx | 1 | 1 | 73.05% |" in text
    assert "±" not in text.split("|---")[1]


# ---------------------------------------------------------------- fault 5: times


def test_images_per_s_only_from_runs_that_log_training_time_alone():
    new = [run("pytorch", 1, 0.7), run("mlx", 1, 0.7)]
    assert train_images_per_s(new[0]) == pytest.approx(10 * 100 / 10.0)  # steps x batch / train_time_s
    old = [{k: v for k, v in r.items() if k not in ("validation_time_s", "test_time_s")} for r in new]
    assert train_images_per_s(old[0]) is None
    evaluation = run("pytorch", 1, 0.7, epochs=0, train_time_s=0.0)
    evaluation["hyperparameters"]["total_steps"] = 0
    assert train_images_per_s(evaluation) is None
    text = "\n".join(pytorch_vs_mlx_section(old))
    assert "| 100 |" not in text and "n/a" in text
    assert "validation" in text and "test pass" in text  # why there is no figure
    assert "| 100 |" in "\n".join(pytorch_vs_mlx_section(new))
    rows = render_results([*old, evaluation]).split("## All runs")[1].split("\n## ")[0]
    assert "test only" in rows and "| 0 s |" not in rows


# ---------------------------------------------------------------- fault 6: headings


def test_comparison_headings_are_unique():
    legacy = [run(fw, 0, 0.73, path=f"runs/side/a/{fw}", code=None) for fw in ("pytorch", "mlx")]
    for r in legacy:
        r["hyperparameters"]["units"] = None  # recorded in other units: another key, same summary
    ondevice = [run(fw, 0, 0.72, path=f"runs/side/b/{fw}") for fw in ("pytorch", "mlx")]
    same_folder = [run(fw, 0, 0.70, lr=0.1, path=f"runs/side/b/{fw}-lr") for fw in ("pytorch", "mlx")]
    runs = [*legacy, *ondevice, *same_folder]
    assert len(pytorch_vs_mlx_groups(runs)) == 3
    headings = [line for line in render_results(runs).splitlines() if line.startswith("## PyTorch vs MLX")]
    assert len(headings) == 3 and len(set(headings)) == 3, headings
    assert any("runs/side/a" in h for h in headings) and any("5c33a4d" in h for h in headings)
    plots = [line for line in render_results(runs).splitlines() if "Curves of every run" in line]
    assert len(set(plots)) == 3  # one plot each, none overwriting another


# ---------------------------------------------------------------- fault 7: plots and names


def write_run(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({k: v for k, v in record.items() if k != "_path"}))
    (folder / "metrics.csv").write_text("epoch,step,train/loss_step,val/acc\n0,0,2.3,\n0,1,2.2,0.3\n")


def test_report_all_writes_its_plots_beside_its_output(tmp_path):
    runs_dir = tmp_path / "runs" / "pair"
    for fw in ("pytorch", "mlx"):
        write_run(runs_dir / fw, run(fw, 1, 0.7))
    out = tmp_path / "out" / "Mine.md"
    out.parent.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "report.py"),
            "--runs",
            str(tmp_path / "runs"),
            "--all",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "runs").rglob("*.png"))  # nothing written among the runs
    plots = list(out.parent.rglob("*.png"))
    assert len(plots) == 1
    assert plots[0].relative_to(out.parent).as_posix() in out.read_text()  # the report names it


def test_results_name_files_that_exist():
    text = render_results([recipe_run(0, 0.94)])
    assert "cifar_lightning/core/recipes.py" in text
    for name in (w.strip("`") for w in text.split() if w.startswith("`cifar_lightning/")):
        assert (ROOT / name.rstrip(".,;:)`")).exists(), name


def test_committed_results_md_is_generated_from_the_committed_logs():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_side_by_side_names_a_data_parallel_runs_processes():
    """Two configurations that differ only in their process layout get telling column names."""
    one = run("mlx", 1, 0.70)
    two = run("mlx", 1, 0.69, lr=0.06, processes={"world_size": 2, "devices": 2, "num_nodes": 1})
    header = render_results([one, two]).split("## Side by side: cifar10")[1].splitlines()[2]
    assert header.count(", 2 processes") == 1 and header.count("mlx small_cnn, ") == 2, header


def test_each_benchmark_file_has_its_own_section_naming_its_file(tmp_path):
    """runs/benchmarks.json and a further pass written with --output runs/benchmarks-<name>.json
    (another machine): each is a section with its own hardware heading and names its own file,
    so a row is never shown under the other file's machine."""
    from cifar_lightning.cli.report import main as report_main

    def bench(cpu, rate):
        row = {"case": "lightning/mlp example: MLXTrainer.fit", "images_per_s": rate, "seconds": 0.8}
        row.update(peak_mb=74, steps=3000, batch_size=32, reference=None)
        return {"hardware": {"cpu": cpu, "cpu_count": 2, "os": "Linux"}, "rows": [row]}

    write_run(tmp_path / "runs" / "one", run("pytorch", 1, 0.7))
    (tmp_path / "runs" / "benchmarks.json").write_text(json.dumps(bench("AMD EPYC", 111.0)))
    (tmp_path / "runs" / "benchmarks-later.json").write_text(json.dumps(bench("Intel Xeon", 222.0)))
    results = tmp_path / "Results.md"
    assert report_main(["--all", "--output", str(results)], root=tmp_path) == 0
    sections = results.read_text().split("\n## Benchmarks (")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "AMD EPYC, 2 cores, Linux)",
        "Intel Xeon, 2 cores, Linux): `runs/benchmarks-later.json`",
    ]
    assert "`runs/benchmarks.json`" in sections[0] and "| 111.0 |" in sections[0] and "222.0" not in sections[0]
    assert "`runs/benchmarks-later.json`" in sections[1] and "| 222.0 |" in sections[1]


def test_a_ratio_measured_over_several_runs_shows_its_interval():
    from cifar_lightning.report.results import render_benchmarks

    row = {"case": "lightning/mlp example: MLXTrainer.fit", "images_per_s": 120.0, "seconds": 0.8, "peak_mb": 74}
    row.update(steps=3000, batch_size=32, repeats=41, ratio=0.98, ratio_interval=[0.93, 1.04])
    row["reference"] = "lightning/mlp example: plain compiled loop"
    report = {"hardware": {"cpu": "AMD EPYC", "cpu_count": 2, "os": "Linux"}, "rows": [row]}
    line = [x for x in render_benchmarks(report) if x.startswith("| lightning/mlp")][0]
    assert "| 3000 steps of 32, median of 41 runs | 0.98 (0.93-1.04) | lightning/mlp example: plain" in line
