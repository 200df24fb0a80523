"""Key layout (``_layout``): safe, distinct, hive-partitioned keys."""

from __future__ import annotations

import calendar
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asynctrack._layout import Layout, new_writer_id, safe_segment

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def _assert_safe(segment: str) -> None:
    assert _SAFE.match(segment), segment
    assert segment not in (".", "..")
    assert "/" not in segment
    assert "\\" not in segment


@pytest.mark.parametrize(
    "name",
    [
        "../",
        "..",
        ".",
        "/",
        "",
        "a/b",
        "../../etc/passwd",
        "\\..\\x",
        "é",
        "名前",
        "x" * 1000,
        "a b",
        "\x00",
        "\ud800",
    ],
)
def test_awkward_names_become_one_safe_segment(name: str) -> None:
    _assert_safe(safe_segment(name))


def test_plain_names_are_kept_as_they_are() -> None:
    for name in ("run-1", "my_experiment.v2", "A.b-C_d"):
        assert safe_segment(name) == name


def test_changed_and_long_names_stay_distinct() -> None:
    names = ["a/b", "a_b", "a b", "a:b", "é", "è", "x" * 1000, "x" * 999 + "y", "..", "__", ".", "_"]
    segments = [safe_segment(n) for n in names]
    assert len(set(segments)) == len(names), dict(zip(names, segments, strict=True))


def test_a_name_shaped_like_a_hashed_segment_does_not_collide() -> None:
    """``safe_segment("a/b")`` is ``a_b-<hash>``; that string is itself safe and
    short, so it is kept as is, and the two different names share a partition."""
    hashed = safe_segment("a/b")
    assert safe_segment(hashed) != hashed


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_any_names_are_safe_and_distinct(first: str, second: str) -> None:
    a, b = safe_segment(first), safe_segment(second)
    _assert_safe(a)
    _assert_safe(b)
    if first != second:
        assert a != b


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=200), st.text(max_size=200), st.integers(0, 10**8 - 1), st.booleans())
def test_keys_stay_inside_the_prefix(experiment: str, run: str, number: int, gzip: bool) -> None:
    layout = Layout(experiment=experiment, run=run, writer=new_writer_id(), gzip=gzip)
    root = Path("/tmp/root")
    for key in (layout.batch_key(number, 1_700_000_000.0), layout.params_key):
        resolved = (root / key).resolve()
        assert resolved.is_relative_to(root)
        assert resolved.parts[len(root.parts) :][:2] == (
            f"experiment={safe_segment(experiment)}",
            f"run={safe_segment(run)}",
        )


def test_batch_key_shape() -> None:
    layout = Layout(experiment="exp", run="run", writer="host-1-abc", gzip=True)
    when = calendar.timegm((2024, 2, 29, 13, 14, 15, 0, 0, 0))
    assert (
        layout.batch_key(7, when)
        == "experiment=exp/run=run/date=2024-02-29/131415-host-1-abc-00000007.jsonl.gz"
    )
    assert layout.params_key == "experiment=exp/run=run/params/host-1-abc.json"
    assert Layout(experiment="e", run="r", writer="w").batch_key(0, 0.0).endswith("-w-00000000.jsonl")


def test_writer_ids_are_safe_and_unique() -> None:
    ids = {new_writer_id() for _ in range(200)}
    assert len(ids) == 200
    for writer in ids:
        _assert_safe(writer)
