"""The benchmarks' own arithmetic (the benchmarks themselves need ../shared and run by make)."""

import pytest

from bench.cache_accuracy import paired_comparison


def test_paired_comparison_counts_images_only_one_model_gets_right():
    cached = {f"{i}.jpg": i < 30 for i in range(100)}
    uncached = {f"{i}.jpg": 10 <= i < 50 for i in range(100)}
    result = paired_comparison(cached, uncached)
    assert (result["only_cached_right"], result["only_uncached_right"]) == (10, 20)
    # Exact two-sided binomial test of 10 out of 30 discordant images at p = 0.5.
    assert result["mcnemar_p"] == pytest.approx(0.0987, abs=1e-4)
    assert paired_comparison(cached, cached)["mcnemar_p"] == 1.0


def test_paired_comparison_needs_the_same_images():
    with pytest.raises(SystemExit, match="different images"):
        paired_comparison({"a.jpg": True}, {"b.jpg": True})
