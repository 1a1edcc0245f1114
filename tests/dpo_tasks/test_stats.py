import pytest

from dpo_tasks.stats import Z95, clustered_win_rate, design_effect, wilson_interval, win_rate


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


# --- several samples per case (evaluation.samples_per_case) -------------------------------------------------


def test_one_sample_per_case_is_exactly_wilson():
    outcomes = ["win"] * 11 + ["tie"] * 3 + ["loss"] * 6
    clustered = clustered_win_rate({str(i): [o] for i, o in enumerate(outcomes)})
    assert clustered == win_rate(outcomes)
    assert (clustered.ci_low, clustered.ci_high) == wilson_interval(12.5, 20)
    assert clustered.design_effect == 1.0 and clustered.effective_n == 20 and clustered.clusters == 20


def test_copies_of_a_case_buy_no_confidence():
    # 10 cases answered 4 times, each case winning or losing every time: 40 pairs that say what 10 say.
    by_case = {f"c{i}": ["win"] * 4 if i < 7 else ["loss"] * 4 for i in range(10)}
    clustered = clustered_win_rate(by_case)
    naive = win_rate(o for outs in by_case.values() for o in outs)
    assert clustered.n == naive.n == 40 and clustered.win_rate == naive.win_rate == 0.7
    assert naive.ci_low > 0.5, "treated as 40 independent cases the gate would promote"
    assert clustered.ci_low < 0.5 and clustered.design_effect >= 4 and clustered.effective_n <= 10
    ten = win_rate(["win"] * 7 + ["loss"] * 3)
    assert clustered.ci_high - clustered.ci_low >= ten.ci_high - ten.ci_low


def test_samples_that_vary_within_every_case_count_in_full():
    # Every case splits its samples the same way: nothing is shared between a case's samples beyond the average.
    by_case = {f"c{i}": ["win", "win", "win", "loss"] for i in range(15)}
    clustered = clustered_win_rate(by_case)
    assert clustered.design_effect == 1.0 and clustered.effective_n == 60
    assert (clustered.ci_low, clustered.ci_high) == pytest.approx(wilson_interval(45, 60))


def test_partly_correlated_samples_sit_between():
    by_case = {f"c{i}": (["win", "win", "tie"] if i % 3 else ["loss", "loss", "win"]) for i in range(30)}
    clustered = clustered_win_rate(by_case)
    assert 1.0 < clustered.design_effect < 3.0
    assert 30 < clustered.effective_n < 90
    flat = win_rate(o for outs in by_case.values() for o in outs)
    assert clustered.ci_low < flat.ci_low and clustered.ci_high > flat.ci_high


def test_one_case_is_one_observation_and_empty_cases_are_ignored():
    one = clustered_win_rate({"only": ["win"] * 5, "unjudged": []})
    assert one.clusters == 1 and one.effective_n == 1.0 and (one.ci_low, one.ci_high) == wilson_interval(1, 1)
    none = clustered_win_rate({})
    assert none.n == 0 and none.win_rate == 0.5 and (none.ci_low, none.ci_high) == (0.0, 1.0)


def test_all_equal_outcomes_have_no_design_effect():
    assert design_effect([[1.0, 1.0], [1.0, 1.0]]) == 1.0


def test_clustered_win_rate_names_a_bad_outcome():
    with pytest.raises(ValueError, match="'draw'"):
        clustered_win_rate({"c1": ["win", "draw"]})


def test_the_summary_line_says_pairs_and_cases_when_cases_were_sampled_more_than_once():
    from dpo_tasks.stats import describe_judged

    assert describe_judged({"n": 60}) == "60 cases"
    assert describe_judged({"n": 180, "samples_per_case": 3, "cases_judged": 60, "effective_n": 151.36}) == \
        "180 pairs from 60 cases, 3 per case; effective n 151.4"
