"""What the commands share: S3 options, errors as one line, colour on a TTY."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TextIO

from .._errors import AsyncTrackError

__all__ = [
    "EXPECTED_ERRORS",
    "Colour",
    "add_s3_options",
    "error",
    "s3_options",
    "visible",
    "warnings_on_stderr",
]

#: What a command reports as one line instead of a traceback: a wrong path,
#: bucket or name, a missing extra, a failed write.
EXPECTED_ERRORS = (AsyncTrackError, OSError, ValueError, ImportError)

#: The C0 controls but the tab, DEL and the C1 controls, each as ``\xNN``: recorded text (a
#: model's answer, an input, a name) printed raw could move the cursor, clear the screen,
#: retitle the terminal or hide lines from the person reading it.
_CONTROLS: Final = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if code != 0x09}
#: The bidirectional controls, each as ``\uNNNN``: ALM, LRM, RLM, the embeddings and
#: overrides (U+202A-202E) and the isolates (U+2066-2069). Printed raw, they reorder the
#: terminal's line: a name can show as another (``"\u202egnp.exe"`` reads "exe.png").
_CONTROLS.update(
    {
        code: f"\\u{code:04x}"
        for code in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
    }
)


def visible(text: str) -> str:
    """``text`` with its control characters (all but the tab) escaped, e.g. ESC as ``\\x1b``,
    and its bidirectional controls, e.g. RIGHT-TO-LEFT OVERRIDE as ``\\u202e``."""
    return text.translate(_CONTROLS)


def add_s3_options(parser: argparse.ArgumentParser) -> None:
    """``--endpoint-url``, ``--region``, ``--profile``: as ``AsyncTracker(..., **s3_options)``."""
    group = parser.add_argument_group("S3 (for s3:// destinations; default: the AWS configuration)")
    group.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://127.0.0.1:5000 for moto or MinIO")
    group.add_argument("--region", help="AWS region")
    group.add_argument("--profile", help="AWS profile name")


def s3_options(args: argparse.Namespace) -> dict[str, Any]:
    """The S3 options given on the command line, as keyword arguments."""
    options = {
        "endpoint_url": getattr(args, "endpoint_url", None),
        "region_name": getattr(args, "region", None),
        "profile": getattr(args, "profile", None),
    }
    return {key: value for key, value in options.items() if value}


def error(command: str, exc: BaseException | str) -> int:
    """Print ``asynctrack <command>: <message>`` on stderr, one line; return exit status 1."""
    message = str(exc) if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    print(f"asynctrack {command}: {visible(' '.join(message.split()))}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def warnings_on_stderr(command: str) -> Iterator[None]:
    """The readers' warnings (unreadable lines skipped) as ``asynctrack <command>: <message>``
    lines on stderr, each once; any other warning as Python shows it."""
    package = str(Path(__file__).parent.parent)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        ours: dict[str, None] = {}
        for warning in caught:
            if warning.category is UserWarning and warning.filename.startswith(package):
                ours[str(warning.message)] = None
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        for message in ours:
            print(f"asynctrack {command}: {visible(message)}", file=sys.stderr)


class Colour:
    """ANSI colour, only when writing to a terminal (and ``NO_COLOR`` is not set)."""

    def __init__(self, stream: TextIO) -> None:
        self.enabled = stream.isatty() and not os.environ.get("NO_COLOR")

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)


def read_checked(
    destination: str, experiment: str | None, run: str | None, s3_options: dict[str, Any]
) -> list[dict[str, Any]]:
    """The selected events, in order; says what was not found instead of returning nothing.

    Raises:
        FileNotFoundError: the destination, experiment or run does not exist, or has no events.
    """
    from .._read._load import read_events
    from .._read._scan import find_event_files

    find_event_files(destination, experiment, run, **s3_options)  # only lists; raises if nothing is there
    events = read_events(destination, experiment, run, **s3_options)
    if not events and (experiment or run):
        # The files there hold other names' events only (names that differ only in case
        # share a directory on a case-insensitive file system), or none.
        selected = " and ".join(
            f"{what} {name!r}" for what, name in (("experiment", experiment), ("run", run)) if name
        )
        raise FileNotFoundError(f"no events of {selected} under {destination}")
    return events
