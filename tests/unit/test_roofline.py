"""Roofline ceilings, the relative expectations built on them, and the course's expectation table
(sparkprov/data/expectations.yml), whose annotations are recomputed here from the roofline code."""

from __future__ import annotations

import pytest

from sparkprov.verify import roofline
from sparkprov.verify.base import StepStatus, judge
from sparkprov.verify.expect import (
    IMPOSSIBLE,
    NO_BASELINE,
    ExpectationError,
    References,
    evaluate_against,
    parse_expectation,
)

GB10 = roofline.device_for("NVIDIA GB10")
assert GB10 is not None
CEILING_70B = References(ceiling=273 / 43.0, ceiling_why="273 GB/s / 43.00 GB", unit="tok/s")


@pytest.mark.parametrize(
    ("name", "device", "bandwidth"),
    [
        ("NVIDIA GB10", "NVIDIA GB10", 273),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM", 3350),
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe", 2000),
        ("NVIDIA H100 NVL", "NVIDIA H100 NVL", 3900),
        ("NVIDIA H200", "NVIDIA H200", 4800),
        ("NVIDIA GH200 480GB", "NVIDIA GH200", 4000),
    ],
)
def test_devices_by_gpu_name(name: str, device: str, bandwidth: float) -> None:
    found = roofline.device_for(name)
    assert found is not None and (found.name, found.bandwidth_gbs) == (device, bandwidth)


def test_unknown_or_missing_gpu_has_no_device() -> None:
    assert roofline.device_for(None) is None
    assert roofline.device_for("Matrox G200eW") is None


@pytest.mark.parametrize(("size_gb", "ceiling"), [(2.0, 136.5), (4.9, 55.7), (43.0, 6.3)])
def test_decode_ceilings_of_spark_facts(size_gb: float, ceiling: float) -> None:
    found = roofline.decode_ceiling(GB10, int(size_gb * 1e9))
    assert found is not None
    assert found.decode_tps == pytest.approx(ceiling, abs=0.05)
    assert found.practical_decode_tps is not None and found.practical_decode_tps < found.decode_tps


def test_mixture_of_experts_reads_only_the_routed_experts() -> None:
    dense = roofline.decode_ceiling(GB10, 65_000_000_000)
    moe = roofline.decode_ceiling(GB10, 65_000_000_000, experts=128, experts_used=4)
    assert dense is not None and moe is not None
    assert dense.decode_tps == pytest.approx(4.2, abs=0.05)
    assert moe.decode_tps == pytest.approx(dense.decode_tps * 32)
    assert moe.decode_tps > 59  # published gpt-oss-120b decode on a Spark stays below its ceiling
    assert "experts used" in moe.why


def test_no_size_no_ceiling() -> None:
    assert roofline.decode_ceiling(GB10, 0) is None


# ---------------------------------------------------------------- expectations against the ceiling


def test_an_expectation_above_the_ceiling_is_impossible_not_failed() -> None:
    verdict = evaluate_against(parse_expectation(">= 15"), 4.5, CEILING_70B)
    assert verdict.ok and verdict.flag == IMPOSSIBLE
    assert verdict.text.startswith("impossible (ceiling 6.3 tok/s)")
    assert "273 GB/s / 43.00 GB" in verdict.text


@pytest.mark.parametrize(
    ("written", "measured", "ok", "flag"),
    [
        (">= 5", 4.5, False, ""),  # possible, and missed: the machine fails
        (">= 4", 4.5, True, ""),
        ("> 6.35", 4.5, True, IMPOSSIBLE),
        ("between 7 and 9", 4.5, True, IMPOSSIBLE),
        ("<= 100", 4.5, True, ""),
        (">= 70% of roofline", 4.5, True, ""),  # 4.44
        (">= 80% of roofline", 4.5, False, ""),  # 5.08
        (">= 120% of roofline", 4.5, True, IMPOSSIBLE),
    ],
)
def test_expectations_against_a_ceiling(written: str, measured: float, ok: bool, flag: str) -> None:
    verdict = evaluate_against(parse_expectation(written), measured, CEILING_70B)
    assert (verdict.ok, verdict.flag) == (ok, flag), verdict.text


def test_roofline_fraction_names_the_ceiling_and_needs_one() -> None:
    verdict = evaluate_against(parse_expectation(">= 70% of roofline"), 4.5, CEILING_70B)
    assert verdict.text == "4.5 >= 4.444 (70% of the ceiling 6.349)"
    missing = evaluate_against(parse_expectation(">= 70% of roofline"), 4.5, References())
    assert not missing.ok and "no roofline ceiling" in missing.text


def test_within_baseline_is_two_sided_and_waits_for_a_baseline() -> None:
    expectation = parse_expectation("within 10% of baseline")
    assert expectation.text == "within 10% of baseline"
    assert evaluate_against(expectation, 47, References(baseline=50)).ok
    assert not evaluate_against(expectation, 44, References(baseline=50)).ok
    assert not evaluate_against(expectation, 56, References(baseline=50)).ok
    waiting = evaluate_against(expectation, 44, References())
    assert waiting.ok and waiting.flag == NO_BASELINE


@pytest.mark.parametrize("written", ["within 10 of baseline", "within ten% of baseline", ">= 70% of rooftop"])
def test_unreadable_relative_expectations(written: str) -> None:
    with pytest.raises(ExpectationError):
        parse_expectation(written)


def test_plain_values_that_mention_words_stay_values() -> None:
    assert parse_expectation("baseline").evaluate("baseline").ok
    assert parse_expectation("roofline").evaluate("roofline").ok


def test_judge_carries_flags_into_reports() -> None:
    result = judge({"x": parse_expectation("within 5% of baseline")}, {"x": 3})
    assert result.status is StepStatus.PASS
    assert result.verdicts["x"].as_dict()["flag"] == NO_BASELINE
    assert "no baseline" in result.summary()
    plain = judge({"x": parse_expectation(">= 1")}, {"x": 3})
    assert "flag" not in plain.verdicts["x"].as_dict()


# ---------------------------------------------------------------- the course's table


def test_course_table_rows_and_their_annotations_agree_with_the_roofline() -> None:
    rows = {row.model: row for row in roofline.expectation_table()}
    assert list(rows) == ["3B Q4", "8B Q4", "70B Q4"]
    for row in rows.values():
        ceiling = row.ceiling(GB10)
        assert ceiling is not None
        assert row.annotation["decode_ceiling_tps"] == pytest.approx(ceiling.decode_tps, abs=0.1)
        assert row.annotation["practical_ceiling_tps"] == pytest.approx(ceiling.practical_decode_tps, abs=0.1)
        assert row.impossible == (row.decode_tps > ceiling.decode_tps), row.model
        assert row.annotation["source"].startswith("course table")
        verdict = evaluate_against(
            parse_expectation(f">= {row.decode_tps:g}"),
            ceiling.decode_tps * 0.7,
            References(ceiling=ceiling.decode_tps, ceiling_why=ceiling.why, unit="tok/s"),
        )
        assert (verdict.flag == IMPOSSIBLE) == row.impossible
    seventy = rows["70B Q4"]
    assert (seventy.decode_tps, seventy.impossible) == (15, True)
    assert "6.3 tok/s" in seventy.annotation["decode_reason"]
    assert not rows["3B Q4"].impossible and not rows["8B Q4"].impossible
