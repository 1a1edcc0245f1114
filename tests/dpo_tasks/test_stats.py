import pytest

from dpo_tasks.stats import Z95, wilson_interval, win_rate


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Reference values: Wilson score interval, z = 1.96 (e.g. Newcombe 1998, table I; R's binom::binom.wilson).
        pytest.param(10, 20, 0.2993, 0.7007, id="half"),
        pytest.param(15, 20, 0.5313, 0.8881, id="15-of-20"),
        pytest.param(0, 10, 0.0, 0.2775, id="zero-wins"),
        pytest.param(10, 10, 0.7225, 1.0, id="all-wins"),
        pytest.param(81, 263, 0.2553, 0.3662, id="newcombe-81-263"),
        pytest.param(0, 0, 0.0, 1.0, id="no-data"),
    ],
)
def test_wilson_matches_reference_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)


def test_wilson_accepts_half_counts_from_ties():
    low, high = wilson_interval(10.5, 20)
    assert wilson_interval(10, 20)[0] < low < wilson_interval(11, 20)[0]
    assert 0 <= low < 10.5 / 20 < high <= 1


@pytest.mark.parametrize(
    ("successes", "n"),
    [pytest.param(-1, 10, id="negative"), pytest.param(11, 10, id="more-than-n")],
)
def test_wilson_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, n)


def test_z_is_the_two_sided_95_quantile():
    assert Z95 == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    ("outcomes", "rate"),
    [
        pytest.param(["win"] * 3 + ["loss"], 0.75, id="no-ties"),
        pytest.param(["tie"] * 4, 0.5, id="all-ties-are-even"),
        pytest.param(["win", "tie", "loss", "tie"], 0.5, id="mixed"),
        pytest.param(["win", "win", "tie", "tie"], 0.75, id="ties-count-half"),
    ],
)
def test_win_rate_counts_ties_as_half(outcomes, rate):
    wr = win_rate(outcomes)
    assert wr.win_rate == pytest.approx(rate)
    assert wr.n == len(outcomes)
    assert (wr.ci_low, wr.ci_high) == pytest.approx(wilson_interval(rate * len(outcomes), len(outcomes)))


def test_win_rate_names_a_bad_outcome():
    with pytest.raises(ValueError, match="'draw'"):
        win_rate(["win", "draw"])
