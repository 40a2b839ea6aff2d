from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mysqlbackup.labels import FULL, INCREMENTAL, Label, is_label, new_label, parse_label

UTC = timezone.utc
T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_full_label() -> None:
    assert new_label(FULL, T0) == "20240102-030405F"


def test_label_is_converted_to_utc_and_drops_subseconds() -> None:
    when = datetime(2024, 1, 2, 5, 4, 5, 999_999, tzinfo=timezone(timedelta(hours=2)))
    assert new_label(FULL, when) == "20240102-030405F"


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime .*aware"):
        new_label(FULL, datetime(2024, 1, 2))


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown backup kind 'diff'; expected one of: full, incremental"):
        new_label("diff", T0)  # type: ignore[arg-type]


def test_round_trip_full() -> None:
    label = parse_label("20240102-030405F")
    assert label == Label(FULL, T0, None)
    assert str(label) == label.text == "20240102-030405F"
    assert label.when.tzinfo is UTC


def test_incremental() -> None:
    text = new_label(INCREMENTAL, T0 + timedelta(days=1), base="20240102-030405F")
    assert text == "20240102-030405F_20240103-030405I"
    label = parse_label(text)
    assert label == Label(INCREMENTAL, T0 + timedelta(days=1), "20240102-030405F")
    assert label.text == text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base": None}, "needs base"),
        ({"base": "nonsense"}, "invalid backup label 'nonsense'"),
        ({"base": "20240102-030405F_20240103-030405I"}, "not a full backup label"),
        ({"base": "20240103-000000F"}, "before its base"),
    ],
)
def test_incremental_needs_a_full_base_before_it(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        new_label(INCREMENTAL, T0, **kwargs)


def test_full_has_no_base() -> None:
    with pytest.raises(ValueError, match="full backup has no base"):
        new_label(FULL, T0, base="20240101-000000F")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "wrong form"),
        ("20240102-030405", "wrong form"),
        ("20240102-030405I", "wrong form"),
        ("20240102-030405f", "wrong form"),
        ("2024012-030405F", "wrong form"),
        ("20240102030405F", "wrong form"),
        ("20240102-030405F\n", "wrong form"),
        (" 20240102-030405F", "wrong form"),
        ("20240102-030405F_20240103-030405F", "wrong form"),
        ("20240102-030405F_", "wrong form"),
        ("20241302-030405F", "not a real date"),
        ("20240230-030405F", "not a real date"),
        ("20240102-250405F", "not a real date"),
        ("20240102-030405F_20240101-000000I", "before its full backup"),
        (20240102, "not a string"),
    ],
)
def test_parse_rejects(value: object, why: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_label(value)  # type: ignore[arg-type]
    message = str(exc.value)
    assert repr(value) in message
    assert why in message
    assert "expected YYYYMMDD-HHMMSSF" in message
    assert not is_label(value)


def test_is_label() -> None:
    assert is_label("20240102-030405F")
    assert is_label("20240102-030405F_20240102-030405I")


def test_labels_sort_in_time_order_and_incrementals_follow_their_full() -> None:
    full1 = new_label(FULL, T0)
    incr = new_label(INCREMENTAL, T0 + timedelta(hours=5), base=full1)
    full2 = new_label(FULL, T0 + timedelta(days=1))
    old = new_label(FULL, T0 - timedelta(days=400))
    assert sorted([full2, incr, old, full1]) == [old, full1, incr, full2]


def test_small_years_stay_zero_padded() -> None:
    text = new_label(FULL, datetime(999, 1, 1, tzinfo=UTC))
    assert text == "09990101-000000F"
    assert parse_label(text).when.year == 999
