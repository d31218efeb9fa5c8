"""The statistics behind Results.md's verdicts: mean and sample standard deviation, and
whether MLX's mean test accuracy differs from PyTorch's by more than noise: Welch's t-test
over independent runs, the paired t-test over runs from the same initial weights (scipy,
imported on first use), two-sided at 95%.
"""

from __future__ import annotations

import warnings

import numpy as np


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


ALPHA = 0.05  # two-sided significance level of the gap verdict: a 95% test


def gap_verdict(a: list[float], b: list[float]) -> str:
    """Whether mean(b) - mean(a) (accuracies as fractions; said in points) is larger than
    seed noise: Welch's unequal-variances t-test, two-sided at 95% (``scipy.stats.ttest_ind``
    with ``equal_var=False``; Welch-Satterthwaite degrees of freedom). No verdict, said so,
    with fewer than two runs on a side or no spread on either side."""
    from scipy import stats

    gap = f"{100 * (np.mean(b) - np.mean(a)):+.2f} points"
    if min(len(a), len(b)) < 2:
        who = "each framework has" if max(len(a), len(b)) < 2 else "one framework has"
        return f"{gap}; no verdict: {who} one run, and Welch's t-test needs two or more (seeds) per framework"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return (
            f"{gap}; no verdict: every run of each framework reached the same accuracy, so there is no "
            "seed noise to test the gap against (Welch's t-test is undefined)"
        )
    with warnings.catch_warnings():  # one side without spread (equal runs) is a valid case, not a precision loss
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_ind(b, a, equal_var=False)
    verdict = "a real gap (p < 0.05)" if res.pvalue < ALPHA else "not established: within seed noise (p >= 0.05)"
    return (
        f"{gap}; Welch's t-test (two-sided, 95%): t = {res.statistic:.2f}, {res.df:.1f} degrees of freedom, "
        f"p = {res.pvalue:.3g}: {verdict}"
    )


SAME_DIFFERENCE = 1e-9  # differences closer than this are equal (float noise; accuracies are k / test images)


def paired_verdict(pytorch: list[float], mlx: list[float]) -> str:
    """Whether the mean of the paired differences mlx[i] - pytorch[i] (accuracies as
    fractions; said in points) is larger than their spread: the paired t-test
    (``scipy.stats.ttest_rel``), two-sided at 95%, n - 1 degrees of freedom. No verdict,
    said so, from one pair, or when every pair differs by the same amount (no spread: the
    test is undefined)."""
    from scipy import stats

    if len(pytorch) != len(mlx) or not pytorch:
        raise ValueError(f"paired_verdict needs pairs, got {len(pytorch)} PyTorch and {len(mlx)} MLX values")
    diffs = np.asarray(mlx, dtype=float) - np.asarray(pytorch, dtype=float)
    gap = f"{100 * diffs.mean():+.2f} points"
    if len(diffs) == 1:
        return f"{gap}; no verdict from one pair: the paired t-test needs two or more pairs (seeds)"
    if np.ptp(diffs) < SAME_DIFFERENCE:
        return (
            f"{gap}; no verdict: every pair differs by the same amount, so the differences have no spread "
            "to test their mean against (the paired t-test is undefined)"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_rel(mlx, pytorch)
    verdict = (
        "a real gap (p < 0.05)"
        if res.pvalue < ALPHA
        else "not established: within the spread of the paired differences (p >= 0.05)"
    )
    return (
        f"{gap}; paired t-test (two-sided, 95%): t = {res.statistic:.2f}, {len(diffs) - 1} degrees of freedom, "
        f"p = {res.pvalue:.3g}: {verdict}"
    )
