"""The public surface: ``__all__``, types (mypy), errors, configuration validation."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import inspect
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import asynctrack
from asynctrack import (
    AsyncTracker,
    AsyncTrackError,
    DeadlockError,
    FlushError,
    FlushTimeoutError,
    LocalSink,
    OTLPExporter,
    PermanentSinkError,
    SinkError,
    Statistics,
    TrackerClosedError,
    TrackerConfig,
)

TESTS = Path(__file__).parent


def test_all_names_resolve_and_are_unique() -> None:
    assert len(asynctrack.__all__) == len(set(asynctrack.__all__))
    assert list(asynctrack.__all__) == sorted(asynctrack.__all__)
    for name in asynctrack.__all__:
        assert getattr(asynctrack, name) is not None, name


def test_every_public_object_of_the_package_is_in_all() -> None:
    defined_here = {
        name
        for name, value in vars(asynctrack).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith("asynctrack")
    }
    assert defined_here <= set(asynctrack.__all__), defined_here - set(asynctrack.__all__)


def test_public_classes_and_functions_are_documented() -> None:
    for name in asynctrack.__all__:
        value = getattr(asynctrack, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_version_matches_the_distribution() -> None:
    assert asynctrack.__version__ == importlib.metadata.version("asynctrack")


def test_the_version_is_written_once() -> None:
    pyproject = (TESTS.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert asynctrack.__version__ not in pyproject


@pytest.mark.parametrize(
    ("name", "extra"),
    [("S3Sink", "s3"), ("SageMakerParameters", "sagemaker"), ("SageMakerCallbackHandler", "sagemaker")],
)
def test_a_name_whose_extra_is_missing_names_that_extra(
    name: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without aiobotocore (the s3 and sagemaker extras), as on the core install.
    for module in [m for m in sys.modules if m == "aiobotocore" or m.startswith("aiobotocore.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "aiobotocore", None)  # None in sys.modules: "not installed"
    monkeypatch.delitem(sys.modules, "asynctrack" + asynctrack._LAZY[name], raising=False)
    # Out of the module's dict, not delattr: hasattr() would call the module's __getattr__,
    # which raises the very ImportError under test when the name was not imported before.
    monkeypatch.delitem(vars(asynctrack), name, raising=False)
    message = rf"asynctrack\.{name} needs the {extra} extra: pip install 'asynctrack\[{extra}\]'"
    with pytest.raises(ImportError, match=message):
        getattr(asynctrack, name)


def test_the_exception_tree() -> None:
    for error in (FlushError, TrackerClosedError, DeadlockError, SinkError):
        assert issubclass(error, AsyncTrackError)
    assert issubclass(FlushTimeoutError, FlushError)
    assert issubclass(FlushTimeoutError, TimeoutError)
    assert issubclass(TrackerClosedError, RuntimeError)
    assert issubclass(DeadlockError, RuntimeError)
    assert issubclass(PermanentSinkError, SinkError)
    error = FlushTimeoutError(timeout=1.5, pending=3, queued=1, failed_batches=0)
    assert str(error) == (
        "3 event(s) recorded before flush() are not yet on durable storage "
        "(1 still queued, 0 failed batch(es) kept for retry): timed out after 1.5 s"
    )
    assert (error.pending, error.queued, error.timeout) == (3, 1, 1.5)


def test_config_and_statistics_are_frozen_slotted_keyword_only() -> None:
    for cls in (TrackerConfig, Statistics):
        assert dataclasses.is_dataclass(cls)
        assert "__slots__" in vars(cls)
        params = dataclasses.fields(cls)
        assert all(f.kw_only for f in params), cls
    config = TrackerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gzip = True  # type: ignore[misc]  # the point: frozen
    with pytest.raises(TypeError):
        TrackerConfig(10)  # type: ignore[misc]  # the point: keyword-only


def test_local_sink_satisfies_the_sink_protocol(tmp_path: Path) -> None:
    assert isinstance(LocalSink(tmp_path), asynctrack.Sink)


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None and shutil.which("mypy") is None, reason="mypy is not installed"
)
def test_typed_usage_passes_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(TESTS / "typed_usage.py")],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_typed_usage_runs(tmp_destination: Path) -> None:
    spec = importlib.util.spec_from_file_location("typed_usage", TESTS / "typed_usage.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second, count = module.run(tmp_destination)
    assert (first.written, first.filtered) == (2, 1)
    assert second.written == 2
    assert count == 4


# -- configuration validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_batch_events", 0, "max_batch_events must be a positive integer, got 0"),
        ("max_batch_events", True, "max_batch_events must be a positive integer, got True"),
        ("max_batch_bytes", 1.5, "max_batch_bytes must be a positive integer, got 1.5"),
        ("max_queue_events", -1, "max_queue_events must be a positive integer, got -1"),
        ("max_queue_bytes", "64", "max_queue_bytes must be a positive integer, got '64'"),
        ("max_field_bytes", 0, "max_field_bytes must be a positive integer, got 0"),
        ("max_depth", 0, "max_depth must be a positive integer, got 0"),
        ("max_concurrent_writes", 0, "max_concurrent_writes must be a positive integer, got 0"),
        ("batch_interval", 0, "batch_interval must be a positive number of seconds, got 0"),
        ("batch_interval", math.nan, "batch_interval must be a positive number of seconds, got nan"),
        ("batch_interval", True, "batch_interval must be a positive number of seconds, got True"),
        ("block_timeout", -0.5, "block_timeout must be a positive number of seconds, got -0.5"),
        ("block_timeout", "1", "block_timeout must be a positive number of seconds, got '1'"),
        ("when_full", "wait", "when_full must be 'drop' or 'block', got 'wait'"),
        ("redact", 42, "redact must be callable, got 42"),
    ],
)
def test_invalid_config_values_raise_value_error_with_an_exact_message(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        TrackerConfig(**{field: value})
    assert str(raised.value) == message


def test_queue_bytes_below_batch_bytes_is_refused() -> None:
    with pytest.raises(ValueError) as raised:
        TrackerConfig(max_batch_bytes=2000, max_queue_bytes=1000)
    assert str(raised.value) == "max_queue_bytes (1000) must be at least max_batch_bytes (2000)"


def test_invalid_regexes_are_refused_at_construction() -> None:
    with pytest.raises(ValueError) as raised:
        TrackerConfig(redact_keys="(")
    assert (
        str(raised.value) == "invalid redaction regex '(': missing ), unterminated subpattern at position 0"
    )
    with pytest.raises(ValueError) as raised:
        TrackerConfig(redact_patterns=("ok", "[a-"))
    assert str(raised.value).startswith("invalid redaction regex '[a-': ")


def test_redact_patterns_given_as_one_string_is_refused() -> None:
    """``redact_patterns="sk-live"`` would be read as the patterns "s", "k",
    "-", ... and redact every such character of every event."""
    with pytest.raises(ValueError, match="redact_patterns"):
        TrackerConfig(redact_patterns="sk-live")  # type: ignore[arg-type]  # the point: wrong type


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"experiment_name": ""}, "experiment_name must be a non-empty string, got ''"),
        ({"experiment_name": None}, "experiment_name must be a non-empty string, got None"),
        ({"run_name": ""}, "run_name must be a non-empty string, got ''"),
        ({"config": {"gzip": True}}, "config must be a TrackerConfig, got {'gzip': True}"),
    ],
)
def test_invalid_tracker_arguments_raise_value_error(
    kwargs: dict[str, Any], message: str, tmp_destination: Path
) -> None:
    with pytest.raises(ValueError) as raised:
        AsyncTracker(tmp_destination, **kwargs)
    assert str(raised.value) == message
    assert not tmp_destination.exists()  # refused before anything started


def test_invalid_destination_raises_value_error() -> None:
    with pytest.raises(ValueError) as raised:
        AsyncTracker(42, experiment_name="e")  # type: ignore[arg-type]  # the point: wrong type
    assert str(raised.value) == "destination must be a path, an s3:// URI or a Sink, got 42"
    with pytest.raises(ValueError, match="given for a local destination"):
        AsyncTracker("some/dir", experiment_name="e", endpoint_url="http://127.0.0.1:1")


def test_mistaken_arguments_are_named(tmp_destination: Path) -> None:
    """One exporter where a list is taken, or a misspelt option of an ``s3://`` destination:
    a ``TypeError`` naming the parameter (and the options there are), before anything starts."""
    with pytest.raises(TypeError) as raised:
        one = OTLPExporter("http://127.0.0.1:4318")
        AsyncTracker(tmp_destination, exporters=one)  # type: ignore[arg-type]  # the point: not a list
    assert str(raised.value) == (
        "exporters must be a list of exporters, e.g. exporters=[OTLPExporter(...)], "
        "got an object of type OTLPExporter"
    )
    with pytest.raises(TypeError) as raised:
        AsyncTracker("s3://bucket/prefix", endpont_url="http://127.0.0.1:1")
    assert str(raised.value).startswith(
        "unknown s3:// destination option(s) ['endpont_url']; the options are: session, profile, "
        "endpoint_url, region_name, "
    )
    assert not tmp_destination.exists()
