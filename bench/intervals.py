"""The 95% interval of a median that the benchmark scripts print, as `taskwarden bench` does."""

import math


def median_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95% interval of the median from the order statistics alone: the k-th smallest and
    k-th largest value, for the largest k at which fewer than k values falling below the true
    median has a chance of at most 2.5%. None below 6 values."""
    v, n = sorted(values), len(values)
    below, k = 0.0, 0
    while k < n:
        below += math.comb(n, k) / 2**n  # the chance that exactly k fall below
        if below > 0.025:
            break
        k += 1
    return (v[k - 1], v[n - k]) if n >= 6 and k >= 1 else None
