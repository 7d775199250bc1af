"""The benchmarks' statistics: intervals of an error rate, and paired tests of two models on
the same images (scipy's exact binomial test)."""

import numpy as np
from scipy.stats import binomtest

ALPHA = 0.05


def error_interval(errors: int, count: int) -> tuple[float, float]:
    """95 % Wilson interval of an error rate of `errors` out of `count` images."""
    interval = binomtest(errors, count).proportion_ci(confidence_level=1 - ALPHA, method="wilson")
    return round(float(interval.low), 4), round(float(interval.high), 4)


def mcnemar(right_a, right_b) -> dict:
    """Images that only one of two models gets right, and the exact McNemar p-value of that
    split (a two-sided binomial test at 1/2 on the discordant images)."""
    right_a, right_b = np.asarray(right_a, dtype=bool), np.asarray(right_b, dtype=bool)
    if right_a.shape != right_b.shape:
        raise ValueError("the two models were scored on different images")
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    p_value = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "mcnemar_p": float(f"{p_value:.4g}")}  # 4 significant digits: small p stay readable


def verdict(tests: list[dict]) -> str:
    """"better" (a beats b) or "worse" where every seed's paired test says so at 5 %, else "tie"."""
    if tests and all(t["mcnemar_p"] < ALPHA and t["only_a_right"] > t["only_b_right"] for t in tests):
        return "better"
    if tests and all(t["mcnemar_p"] < ALPHA and t["only_a_right"] < t["only_b_right"] for t in tests):
        return "worse"
    return "tie"
