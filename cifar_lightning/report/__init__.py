"""Results.md from the committed run logs; never imported by a training run.

logs          run.json logs read back: status, code, device class, time spans
grouping      which runs count together: recipe runs, repeats, PyTorch-vs-MLX groups
pairing       MLX runs started from a PyTorch run's initial weights
significance  mean and spread, Welch's and the paired t-test (scipy) behind the verdicts
results       Results.md's text: tables, targets, groups, pairs, verdicts
plots         figures across runs (PyTorch-vs-MLX curves)
"""
