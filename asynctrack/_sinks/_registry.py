"""Destinations by scheme: ``s3://`` and local paths, or a ``Sink`` given as it is.

A new destination kind is one sink module and one entry in ``_SCHEMES`` (the
module is imported only when a destination of its scheme is used, so an extra's
dependencies stay optional).
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, Final

from ._base import Sink
from ._local import LocalSink

__all__ = ["make_sink", "scheme_of"]

#: scheme -> (module, class name, extra that provides it)
_SCHEMES: Final[dict[str, tuple[str, str, str]]] = {
    "s3": ("asynctrack._sinks._s3", "S3Sink", "s3"),
}


def scheme_of(destination: str) -> str | None:
    """The URI scheme of a destination (``"s3"``), or ``None`` for a local path."""
    head, sep, _ = destination.partition("://")
    return head.lower() if sep and head.isalnum() else None


def make_sink(destination: str | os.PathLike[str] | Sink, **options: Any) -> Sink:
    """The sink for a destination: ``s3://bucket/prefix``, a directory, or a ``Sink``.

    Raises:
        ValueError: an unknown scheme, or options for a local destination.
        TypeError: an option the scheme's sink does not take (the message lists those it does).
        ImportError: the scheme's extra is not installed (the message names it).
    """
    if isinstance(destination, str) and (scheme := scheme_of(destination)) is not None:
        entry = _SCHEMES.get(scheme)
        if entry is None:
            raise ValueError(
                f"unknown destination scheme {scheme!r} in {destination!r}; "
                f"known: {', '.join(sorted(_SCHEMES))} or a local directory"
            )
        module_name, class_name, extra = entry
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                f"an {scheme}:// destination needs the {extra} extra: pip install 'asynctrack[{extra}]'"
            ) from exc
        make = getattr(module, class_name)
        # A misspelt option: named, with the ones there are (not a TypeError from its __init__).
        known = [p.name for p in inspect.signature(make).parameters.values() if p.kind is p.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(
                f"unknown {scheme}:// destination option(s) {unknown}; the options are: {', '.join(known)}"
            )
        sink: Sink = make(destination, **options)
        return sink
    if isinstance(destination, str | os.PathLike):
        if options:
            raise ValueError(f"S3 options {sorted(options)} given for a local destination")
        return LocalSink(destination)
    if isinstance(destination, Sink):
        return destination
    raise ValueError(f"destination must be a path, an s3:// URI or a Sink, got {destination!r}")
