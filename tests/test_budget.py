"""Budget strings: accepted forms, errors, checks."""

from __future__ import annotations

import pytest

from archsearch.cost import Budget, format_count, parse_budget
from archsearch.errors import BudgetError


@pytest.mark.parametrize(
    ("text", "params", "macs", "latency_ms"),
    [
        ("3.5M-params", 3_500_000, None, None),
        ("900M-macs", None, 900_000_000, None),
        ("0.9G-macs", None, 900_000_000, None),
        ("1.26G-flops", None, 1_260_000_000, None),
        ("5ms-latency", None, None, 5.0),
        ("0.5s-latency", None, None, 500.0),
        ("250us-latency", None, None, 0.25),
        ("12-latency", None, None, 12.0),
        ("500K-params", 500_000, None, None),
        ("1234567-params", 1_234_567, None, None),
        ("1e6-params", 1_000_000, None, None),
        (".5G-macs", None, 500_000_000, None),
        ("3.5m-PARAMS", 3_500_000, None, None),  # case-insensitive; m is mega for counts
        ("0.9g-MACs", None, 900_000_000, None),
        ("5MS-Latency", None, None, 5.0),
        ("1G-FLOPs", None, 1_000_000_000, None),
        ("  3.5 M - params ", 3_500_000, None, None),
        ("3.5M params", 3_500_000, None, None),
        ("3.5M_params", 3_500_000, None, None),
        ("3.5M-param", 3_500_000, None, None),
        ("3.5M-params,0.9G-macs", 3_500_000, 900_000_000, None),
        ("3.5M-params, 0.9G-macs , 5ms-latency", 3_500_000, 900_000_000, 5.0),
        ("5ms-latency,1.26G-flops", None, 1_260_000_000, 5.0),
    ],
)
def test_accepted_forms(
    text: str, params: int | None, macs: int | None, latency_ms: float | None
) -> None:
    budget = parse_budget(text)
    assert (budget.params, budget.macs, budget.latency_ms) == (params, macs, latency_ms)
    assert budget.text == text
    assert isinstance(budget.params, (int, type(None))) and isinstance(
        budget.macs, (int, type(None))
    )
    assert parse_budget(str(budget)) == Budget(params, macs, latency_ms, text=str(budget))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "cannot read 'abc'"),
        ("3.5M", "cannot read"),
        ("params", "cannot read"),
        ("3.5X-params", "unit 'X' does not fit params"),
        ("3.5ms-params", "unit 'ms' does not fit params"),
        ("5M-latency", "unit 'M' does not fit latency"),
        ("3.5M-weights", "unknown metric 'weights'"),
        ("3.5M-params,", "empty item"),
        (",3.5M-params", "empty item"),
        ("3.5M-params,3M-params", "params given twice"),
        ("1G-macs,0.9G-flops", "macs given twice"),
        ("0-params", "positive"),
        ("-3M-params", "cannot read"),
        ("3.5M--params", "cannot read"),
        ("3.5M-params;0.9G-macs", "cannot read"),
    ],
)
def test_errors(text: str, problem: str) -> None:
    with pytest.raises(BudgetError) as info:
        parse_budget(text)
    message = str(info.value)
    assert message.startswith(f"budget {text!r}: ")
    assert problem in message
    assert "3.5M-params, 900M-macs, 0.9G-macs" in message and "'flops' is a synonym" in message
    assert "5ms-latency, joined by commas" in message
    assert "\n" not in message


def test_not_a_string() -> None:
    with pytest.raises(BudgetError, match="expected a string"):
        parse_budget(3.5)  # type: ignore[arg-type]


def test_check_messages() -> None:
    budget = parse_budget("3.5M-params,0.9G-macs,5ms-latency")
    assert budget.check(params=3_410_000, macs=880_000_000, latency_ms=4.9) == []
    assert budget.check(params=3_610_000) == ["params 3.61M > budget 3.50M"]
    assert budget.check(macs=1_300_000_000) == ["macs 1.30G > budget 900.00M"]
    assert budget.check(latency_ms=6.2) == ["latency 6.20ms > budget 5.00ms"]
    assert budget.check(params=3_610_000, macs=1_300_000_000, latency_ms=6.2) == [
        "params 3.61M > budget 3.50M",
        "macs 1.30G > budget 900.00M",
        "latency 6.20ms > budget 5.00ms",
    ]
    # a near miss is printed with enough digits to tell the numbers apart
    assert budget.check(params=3_500_400) == ["params 3.5004M > budget 3.5000M"]
    assert budget.check(params=3_500_000) == []  # the limit itself is feasible
    assert budget.is_feasible(params=3_000_000) and not budget.is_feasible(latency_ms=9.0)
    # metrics the budget leaves free, or that are not measured, are skipped
    assert parse_budget("3.5M-params").check(macs=10**12, latency_ms=1e6) == []


def test_violations_ratio() -> None:
    budget = parse_budget("4M-params,1G-macs")
    ratios = budget.violations_ratio(params=5_000_000, macs=500_000_000, latency_ms=3.0)
    assert ratios == pytest.approx({"params": 0.25, "macs": -0.5})
    assert budget.violations_ratio() == {}
    assert parse_budget("5ms-latency").violations_ratio(latency_ms=5.0) == {"latency_ms": 0.0}


def test_str_and_metrics() -> None:
    budget = parse_budget("0.9G-macs, 3.5M-params")
    assert str(budget) == "3.5M-params,900M-macs"
    assert budget.metrics == ("params", "macs")
    assert str(parse_budget("5ms-latency")) == "5ms-latency"
    assert str(Budget()) == "unconstrained"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (3_410_000, "3.41M"),
        (1_258_411_200, "1.26G"),
        (12_345, "12.35K"),
        (512, "512"),
        (0, "0"),
        (999_999, "1000.00K"),
        (5.5, "5.50"),
    ],
)
def test_format_count(n: float, text: str) -> None:
    assert format_count(n) == text


def test_format_count_digits() -> None:
    assert format_count(3_412_345, digits=3) == "3.412M"
