"""Budget strings."""

from __future__ import annotations

import pytest

from evaluators.budget import BudgetError, parse_flops, parse_latency_ms


@pytest.mark.parametrize(("text", "flops"), [
    ("300MFLOPs", 300_000_000), ("300 MFLOPs", 300_000_000), ("0.3GFLOPs", 300_000_000),
    ("300M", 300_000_000), ("300e6", 300_000_000), ("300000000", 300_000_000),
    ("150kFLOPs", 150_000), ("300mflops", 300_000_000), ("300 MMACs", 300_000_000),
    ("1.5G", 1_500_000_000), ("42328152", 42_328_152), ("  300MFLOPS ", 300_000_000),
])
def test_flops_budgets_parse(text, flops):
    assert parse_flops(text) == flops


@pytest.mark.parametrize("text", ["banana", "-5M", "0", "300MB", "nan", "inf", "", "M",
                                  "300 MFLOPs/s", "1e400", "0.0000001"])
def test_bad_flops_budgets_name_the_accepted_forms(text):
    with pytest.raises(BudgetError) as info:
        parse_flops(text)
    message = str(info.value)
    assert "--budget" in message and "300MFLOPs" in message and "\n" not in message


@pytest.mark.parametrize(("text", "ms"), [("15ms", 15.0), ("15 ms", 15.0), ("1.5s", 1500.0),
                                          ("800us", 0.8), ("15", 15.0), ("2.5MS", 2.5)])
def test_latency_budgets_parse(text, ms):
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["800\u00b5s", "800\u03bcs", "800 \u039cS"])
def test_micro_as_micro_sign_or_greek_mu(text):
    """U+00B5 (what a keyboard's AltGr+m types) and U+03BC (Greek mu) both mean micro."""
    assert parse_latency_ms(text) == 0.8


def test_the_same_latency_in_other_units_is_the_same_number():
    """A resumed run compares budgets exactly: 700us must equal 0.7ms, not 0.7000000000000001."""
    assert parse_latency_ms("700us") == parse_latency_ms("0.7ms") == 0.7
    assert parse_latency_ms("1.5s") == parse_latency_ms("1500ms") == 1500.0


@pytest.mark.parametrize("text", ["fast", "-1ms", "0ms", "15 min", "nan ms"])
def test_bad_latency_budgets(text):
    with pytest.raises(BudgetError, match="--latency-budget"):
        parse_latency_ms(text)
