import pytest

from nnunet_fmabs.annotation.rounds import budget_from_spec, round_iterations, round_sizes


@pytest.mark.parametrize(
    "budget, k, expected",
    [
        (20, 2, [4, 2, 2, 2, 2, 2, 2, 2, 2]),  # LA: 4 of 20, then K = 2
        (20, 1, [4] + [1] * 16),
        (20, 3, [4, 3, 3, 3, 3, 3, 1]),
        (25, 2, [5] + [2] * 10),  # BraTS: 5 of 25
        (5, 1, [1, 1, 1, 1, 1]),
        (5, 2, [1, 2, 2]),
        (5, 3, [1, 3, 1]),
        (1, 1, [1]),
        (1, 2, [1]),
        (1, 3, [1]),
    ],
)
def test_round_sizes(budget, k, expected):
    sizes = round_sizes(budget, k)
    assert sizes == expected and sum(sizes) == budget


def test_round_sizes_warmup():
    assert round_sizes(5, 2, warmup=3) == [3, 2]
    assert round_sizes(5, 2, warmup=5) == [5]
    assert round_sizes(10, 3, warmup_fraction=0.5) == [5, 3, 2]
    assert round_sizes(3, 2, warmup_fraction=0.5) == [2, 1]  # 1.5 rounds half up
    assert round_sizes(4, 2, warmup_fraction=1.0) == [4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget=0), "budget"),
        (dict(budget=-3), "budget"),
        (dict(budget=5, k=0), "k"),
        (dict(budget=5, warmup=6), "warmup"),
        (dict(budget=5, warmup=0), "warmup"),
        (dict(budget=5, warmup_fraction=0.0), "warmup_fraction"),
        (dict(budget=5, warmup_fraction=1.5), "warmup_fraction"),
    ],
)
def test_round_sizes_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        round_sizes(**kwargs)


def test_budget_from_spec():
    assert budget_from_spec("20", 80) == 20
    assert budget_from_spec(20, 80) == 20
    assert budget_from_spec(" 0.25 ", 80) == 20
    assert budget_from_spec(0.25, 80) == 20
    assert budget_from_spec("25%", 80) == 20
    assert budget_from_spec("10%", 250) == 25
    assert budget_from_spec("0.001", 80) == 1  # at least one scan
    assert budget_from_spec("100%", 80) == 80
    assert budget_from_spec("80", 80) == 80


@pytest.mark.parametrize("spec", ["81", 81, "1.5", 2.0, "150%"])
def test_budget_from_spec_too_large_names_both_numbers(spec):
    with pytest.raises(ValueError) as error:
        budget_from_spec(spec, 80)
    message = str(error.value)
    assert "80" in message and str(spec) in message


@pytest.mark.parametrize("spec", ["0", 0, "-3", "0%", 0.0, "abc", ""])
def test_budget_from_spec_non_positive_or_garbage(spec):
    with pytest.raises(ValueError):
        budget_from_spec(spec, 80)


def test_round_iterations():
    assert round_iterations(1, 20000) == [0]
    # 9 rounds (LA) over the first quarter of 20000 iterations (the default spread), or over the first half
    assert round_iterations(9, 20000) == [0, 625, 1250, 1875, 2500, 3125, 3750, 4375, 5000]
    assert round_iterations(9, 20000, spread=0.5) == [0, 1250, 2500, 3750, 5000, 6250, 7500, 8750, 10000]
    assert round_iterations(3, 1000, spread=1.0) == [0, 500, 1000]
    assert round_iterations(3, 10, spread=0.25) == [0, 1, 3]  # 1.25 -> 1, 2.5 -> 3
    with pytest.raises(ValueError):
        round_iterations(0, 100)
    with pytest.raises(ValueError):
        round_iterations(3, 100, spread=0.0)
    with pytest.raises(ValueError):
        round_iterations(3, 0)
