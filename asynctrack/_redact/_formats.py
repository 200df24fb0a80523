"""Value detectors: credential formats found anywhere in a text, in linear passes."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator
from itertools import compress, islice, repeat
from typing import Final

from ._common import REDACTED_BYTES

__all__ = ["LITERAL_FORMATS", "SLUG", "aws_secrets", "base64_runs", "pgpass_lines", "run_formats"]

# -- value detectors ------------------------------------------------------------------
#
# Most formats are a literal prefix and a long run of token characters. They are
# found from the runs: one ``translate`` maps the token characters ``[A-Za-z0-9_-]``
# to ``a``, where the runs of 20+ are found, and the formats are matched at the start
# of each run. The first ``_FEW_RUNS`` runs are found with ``bytes.find`` and judged
# in Python; the rest by a regex with a literal prefix (in C) and one C call per run
# that ``map`` makes, so Python runs per credential found, not per run. The other
# formats are found from a literal with ``bytes.find``. Bare AWS secrets are found
# the same way from the runs of base64 characters.

#: ``bytes.translate`` table: token characters ``[A-Za-z0-9_-]`` -> ``a``, all else -> space.
_TOKENMAP: Final = bytes(
    0x61 if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in b"_-") else 0x20
    for b in range(256)
)
_START: Final = re.Match.start
_END: Final = re.Match.end
_RUN20: Final = b"a" * 20  # the shortest format below is 20 characters long
#: In the translated text: the byte before a run of 20+ (the match starts there).
_RUN20_AFTER: Final = re.compile(b" " + _RUN20)
#: Runs judged in Python first: for a few runs, ``bytes.find`` and a regex match per
#: run cost less than setting up the pipeline (a 300-byte body: ~1 µs less).
_FEW_RUNS: Final = 8

#: The formats that start a run, in order (the first that matches wins).
_RUN_FORMATS: Final = (
    rb"sk-[A-Za-z0-9_\-]{20,}+",  # OpenAI (sk-proj-), Anthropic (sk-ant-), Langfuse (sk-lf-)
    rb"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}+",  # Stripe
    rb"whsec_[A-Za-z0-9]{24,}+",  # Stripe webhook signing secret
    rb"pk-lf-[A-Za-z0-9_\-]{16,}+",  # Langfuse public
    rb"lsv2_[A-Za-z0-9_]{20,}+",  # LangSmith
    rb"ls__[a-f0-9]{32}",
    rb"A(?:KIA|SIA|BIA|CCA)[0-9A-Z]{16}(?![0-9A-Za-z])",  # AWS access key ids
    rb"gh[pousr]_[A-Za-z0-9]{30,}+",  # GitHub
    rb"github_pat_[A-Za-z0-9_]{22,}+",
    rb"gl(?:pat|ptt|dt|rt|cbt|oas|ft|imt|soat|agent|ffct)-[A-Za-z0-9_\-]{20,}+",  # GitLab
    rb"GR1348941[A-Za-z0-9_\-]{20,}+",  # GitLab runner registration
    rb"xox[abposre]-[A-Za-z0-9\-]{15,}+",  # Slack
    rb"xapp-[0-9]-[A-Za-z0-9\-]{20,}+",
    rb"AIza[0-9A-Za-z_\-]{35,}+",  # Google API key
    rb"GOCSPX-[A-Za-z0-9_\-]{24,}+",  # Google OAuth client secret
    rb"hf_[A-Za-z0-9]{30,}+",  # Hugging Face
    rb"npm_[A-Za-z0-9]{36,}+",  # npm
    rb"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{40,}+",  # PyPI
    rb"gsk_[A-Za-z0-9]{40,}+",  # Groq
    rb"xai-[A-Za-z0-9]{50,}+",  # xAI
    rb"r8_[A-Za-z0-9]{30,}+",  # Replicate
    rb"pplx-[A-Za-z0-9]{40,}+",  # Perplexity
    rb"tvly-(?:dev-|prod-)?[A-Za-z0-9]{20,}+",  # Tavily
    rb"pcsk_[A-Za-z0-9_]{40,}+",  # Pinecone
    rb"SK[0-9a-fA-F]{32}(?![A-Za-z0-9_\-])",  # Twilio API key
    rb"key-[0-9A-Za-z]{32}(?![A-Za-z0-9_\-])",  # Mailgun
    rb"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",  # Shopify
    rb"sq0(?:atp|csp)-[A-Za-z0-9_\-]{22,}+",  # Square
    rb"EAA[A-Za-z0-9_\-]{60,}+",  # Square access token, Facebook/Meta access token
    rb"NR(?:AK|II|JS)-[A-Za-z0-9_\-]{19,}+",  # New Relic
    rb"HRKU-[A-Za-z0-9_\-]{20,}+",  # Heroku
    rb"do[opr]_v1_[a-f0-9]{64}",  # DigitalOcean
    rb"ATATT3[A-Za-z0-9_\-=]{20,}+",  # Atlassian
    rb"lin_(?:api|oauth)_[A-Za-z0-9]{32,}+",  # Linear
    rb"ntn_[A-Za-z0-9]{40,}+",  # Notion
    rb"secret_[A-Za-z0-9]{43}(?![A-Za-z0-9_\-])",  # Notion (integration secret)
    rb"PMAK-[a-f0-9]{24}-[a-f0-9]{34}",  # Postman
    rb"dapi[a-f0-9]{32}(?:-[0-9]++)?(?![A-Za-z0-9_])",  # Databricks
    rb"sntry[su]_[A-Za-z0-9_=+/\-]{40,}+",  # Sentry
    rb"AGE-SECRET-KEY-1[0-9A-Z]{58}",  # age
    rb"eyJ[A-Za-z0-9_\-]{8,}+\.eyJ[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]*+",  # JWT
    # Formats whose run starts after the format's own start (a prefix ending in '.' or
    # ':'), found by a lookbehind from the run (the run is the secret), and formats whose
    # run starts with hex digits, found by what follows them.
    rb"(?<=ya29\.)[A-Za-z0-9_\-]{20,}+",  # Google OAuth access token
    rb"(?<=hv[sbr]\.)[A-Za-z0-9_\-]{24,}+",  # HashiCorp Vault
    rb"(?<=dp\.(?:pt|st|ct|sa)\.)[A-Za-z0-9]{40,}+",  # Doppler
    rb"(?<=dp\.scim\.)[A-Za-z0-9]{40,}+",
    rb"(?<=dp\.audit\.)[A-Za-z0-9]{40,}+",
    rb"(?<=pat[A-Za-z0-9]{14}\.)[a-f0-9]{64}(?![A-Za-z0-9])",  # Airtable personal access token
    rb"(?<=[0-9]{5}:)AA[A-Za-z0-9_\-]{31,33}+(?![A-Za-z0-9_\-])",  # Telegram bot token
    rb"[0-9a-f]{32}-us[0-9]{1,2}(?![A-Za-z0-9_\-])",  # Mailchimp
    rb"[0-9a-f]{36}NRAL(?![A-Za-z0-9_\-])",  # New Relic license key
)
_FORMAT: Final = b"(" + b"|".join(_RUN_FORMATS) + b")"
#: At the byte before a run: a format at the run's start, or else (group 2) right
#: after a JSON escape's letter that starts it ("\\nsk-..." in JSON text).
_FORMAT_AFTER: Final = re.compile(rb"(?s:.)(?:" + _FORMAT + rb"|(?<=\\)[ntrbf]" + _FORMAT + rb")")
_FORMAT_FIRST: Final = re.compile(_FORMAT)  # a run at the start of the text
#: The first two bytes of every format: a run that starts with none of them (nor with
#: an escape's letter, nor after a '.', nor with a Mailchimp or New Relic key's hex
#: digits, told by what follows them) needs no match (a set lookup is cheaper than the
#: regex).
_PREFIXES: Final = frozenset(
    b"sk rk wh pk ls AK AS AB AC gh gi gl GR xo xa AI GO hf np py gs r8 pp tv pc SK ke sh sq EA NR HR do AT"
    b" li nt se PM da sn AG ey AA".split()
)
_ESCAPES: Final = frozenset(b"ntrbf")  # JSON escapes whose letter glues to a run

#: The formats with a prefix of their own also start after a '-' or '_' in a run, glued
#: to a word (``tag-AKIA...``, ``backup_ghp_...``, ``https://ci-ghp_...@``), as gitleaks'
#: rules (``\b``, or no boundary) match them there, each with its own length and
#: characters, but not where the body after the prefix reads as a slug or an identifier
#: (``feature-sk-learn-pipeline``, ``hugs-xoxo-and-kisses``): its first four '-'/'_'
#: parts (or all, if fewer) words (``_WORD``), where a key's letters and digits mix.
#: Left out: Mailgun's ``key-`` (``cache-key-<md5>``), the formats led by hex digits and
#: those found by a lookbehind (they start after a '.' or ':', as a run does).
#:
#: One C search of the text (``_GLUED``): the formats grouped by their first byte (a
#: '-' or '_' followed by no format's first byte costs one set test); each attempt reads
#: a bounded part of the run (a format's shortest body, four parts, or a match), so a
#: run dense with glue points (``-s-s-s...``, ``sk-sk-sk...``) costs linear time. A
#: glued JWT's header stops at a glued ``eyJ``: a failed one reads its run up to the next.
#:
#: A word: digits, capitals, lower-case letters, digits, each maybe none, in that order
#: (``learn``, ``Release``, ``v2``, ``x86``, ``64bit``, ``2024``, ``AKIA``; not ``dE6g``).
_WORD: Final = r"[0-9]*+[A-Z]*+[a-z]*+[0-9]*+"
#: A slug's start: four parts that are words, each followed by a '-' or '_' or the
#: run's end (a text's end too: a streamed run that ends so is judged as it stands).
SLUG: Final = (_WORD + r"(?:[-_]|(?![A-Za-z0-9_\-]))") * 4  # unrolled: a repeat costs more
#: A format's body: its first counted character class (group 1: its shortest length).
_BODY: Final = re.compile(rb"\[[^\]]*\]\{([0-9]+)")


def _glued_pattern() -> bytes:
    """``_GLUED``'s pattern: '-' or '_', then (group 1) a glued format."""
    formats = [f for f in _RUN_FORMATS if not f.startswith((b"(?<=", b"[0-9a-f]", b"key-", b"eyJ"))]
    slug = b"(?!" + SLUG.encode() + b")"
    bodies = [_BODY.search(f) for f in formats]
    if None in bodies:  # pragma: no cover - each format has a body
        raise ValueError("a format without a body")
    # Before the slug's check, a look at the body's shortest length (cheaper, and most
    # glue points fail it).
    formats = [
        f[: m.start()] + b"(?=" + m[0] + b"})" + slug + f[m.start() :]
        for f, m in zip(formats, bodies, strict=True)
        if m
    ]
    # A JWT: its header (20 characters at least, as a run the search starts from).
    formats.append(rb"eyJ(?:[A-Za-z0-9]|[-_](?!eyJ)){17,}+\.eyJ[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]*+")
    groups: dict[bytes, list[bytes]] = {}  # first byte -> the rest of each format (in order)
    for f in formats:
        firsts, rest = (f[1 : f.index(b"]")], f[f.index(b"]") + 1 :]) if f[:1] == b"[" else (f[:1], f[1:])
        for first in firsts:
            groups.setdefault(bytes([first]), []).append(rest)
    branches = (first + b"(?:" + b"|".join(rests) + b")" for first, rests in groups.items())
    # A '-' or '_' before no format's first byte (most of them: JSON keys, ids) costs one
    # test of a set, not a branch per group.
    firsts = re.escape(b"".join(sorted(groups)))
    return rb"[-_](?=[" + firsts + rb"])(" + b"|".join(branches) + b")"


_GLUED: Final = re.compile(_glued_pattern())

#: (literal that must occur, pattern, group to redact: 0 for the whole match); entries
#: that share a literal check it once per text. A lookbehind ``(?<![^\\][A-Za-z0-9]...)``
#: asks that no word character come before the format, unless it is the letter of a
#: JSON escape (``\\nBearer xyz``).
LITERAL_FORMATS: Final[tuple[tuple[bytes, re.Pattern[bytes], int], ...]] = (
    (
        b"BEGIN",  # one check for this and ssh.com's blocks
        re.compile(
            rb"-----BEGIN (?:[A-Z0-9]{1,20}+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"
            # Up to "-----END" or the string's end: runs without '-' in one step each
            # (the lookahead only at a '-'), all possessive.
            rb"(?:[^\"\\\-]++|-(?!----END)|\\.)*+(?:-----END[A-Z0-9 ]{0,60}+-----)?"
        ),
        0,
    ),
    # The password of a URL: the user part stops at ':', the password may hold '@'
    # and ':' (the last '@' before the host wins, within 256 bytes).
    (b"://", re.compile(rb"://[^\s/?#@:\"'\\]{0,256}+:([^\s/?#\"'\\]{1,256})@"), 1),
    (b"://", re.compile(rb"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_\-]{10,}+"), 0),
    (
        b"earer",
        re.compile(rb"earer(?<=[Bb]earer)(?<![^\\][A-Za-z0-9].earer)[ \t]++([A-Za-z0-9._~+/=\-]{16,}+)"),
        1,
    ),
    (b"BEARER", re.compile(rb"BEARER(?<![^\\][A-Za-z0-9]BEARER)[ \t]++([A-Za-z0-9._~+/=\-]{16,}+)"), 1),
    (b"SG.", re.compile(rb"SG\.(?<![^\\][A-Za-z0-9_\-]SG\.)[A-Za-z0-9_\-]{16,}+\.[A-Za-z0-9_\-]{16,}+"), 0),
    # Private keys in the other text formats: ssh.com's (to its END line or the string's
    # end, as PEM) and PuTTY's (the whole file: to the string's end).
    (
        b"BEGIN",
        re.compile(
            rb"---- BEGIN SSH2 (?:ENCRYPTED )?PRIVATE KEY ----"
            rb"(?:[^\"\\\-]++|-(?!--- END)|\\.)*+(?:---- END[A-Z0-9 ]{0,60}+----)?"
        ),
        0,
    ),
    (b"PuTTY-User-Key-File-", re.compile(rb"PuTTY-User-Key-File-(?:[^\"\\]++|\\.)*+"), 0),
    # Signed URLs: the signature of an AWS (SigV4 ``X-Amz-Signature``, SigV2
    # ``Signature``) or GCP (``X-Goog-Signature``) URL, and an Azure SAS's ``sig``.
    (
        b"=",  # one check (a byte: memchr) for this and the next
        re.compile(
            rb"ignature=(?<=[Ss]ignature=)(?<![^\\][A-Za-z0-9_].ignature=)([A-Za-z0-9%+/=_.\-]{16,}+)"
        ),
        1,
    ),
    (b"=", re.compile(rb"sig=(?<=[?&;]sig=)([A-Za-z0-9%+/=_.\-]{16,}+)"), 1),
    # Webhook URLs whose last segment is the secret (Discord's and the same shape), in a URL.
    (b"://", re.compile(rb"/api/webhooks/[0-9]{5,30}+/([A-Za-z0-9_\-]{20,}+)"), 1),
    # Oracle's JDBC URL: user/password@host.
    (
        b"jdbc:oracle:",
        re.compile(rb"jdbc:oracle:[a-z]{1,10}+:[^/@\s\"\\:]{1,128}+/([^/@\s\"\\:]{1,128}+)@"),
        1,
    ),
    # Credential files. ``.netrc``: ``machine <host> [login <u>] password <p>``, on one
    # line or several (a JSON ``\\n`` between words).
    (
        b"machine",
        re.compile(
            rb"machine(?<![^\\][A-Za-z0-9_\-]machine)(?:[ \t]|\\[ntr])++[^\s\"\\]{1,256}+"
            rb"(?:(?:[ \t]|\\[ntr])++(?:login|account|port)(?:[ \t]|\\[ntr])++[^\s\"\\]{1,256}+){0,3}+"
            rb"(?:[ \t]|\\[ntr])++password(?:[ \t]|\\[ntr])++([^\s\"\\]{1,256}+)"
        ),
        1,
    ),
)

#: ``.pgpass``: a line ``host:port:database:user:password`` (port a number or ``*``),
#: found from the ':' before the port (group 1: the password). The host, checked in
#: Python per candidate, must start a line: a JSON string's start or a ``\\n``. A
#: database and a user that are both numbers (digits, ``+``, ``-``, ``.``) are not a
#: line's: a time with its UTC offset's seconds (``T12:00:00+00:09:21``), a timecode
#: (``00:00:01:23:456``), a MAC or IPv6 address of digits.
_NOT_NAMES: Final = rb"(?![0-9+\-.]{1,63}+:[0-9+\-.]{1,63}+:)"
_PGPASS: Final = re.compile(
    rb":(?:[0-9]{1,5}+|\*):" + _NOT_NAMES + rb'[^:\s"\\]{1,63}+:[^:\s"\\]{1,63}+:([^:\s"\\]{1,256}+)'
)
_HOST_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_*[]%"
#: Candidates judged one by one per text at most. Past them (a hostile or junk text),
#: one pass of the whole rule as a regex (group 1: the password), whose every attempt
#: starts at a '"' or a backslash: costlier per byte than the search from ':', so kept
#: for such texts.
_PGPASS_CHECKED: Final = 64
_PGPASS_LINE: Final = re.compile(
    rb'(?:"|\\n)[A-Za-z0-9.\-_*\[\]%]{1,253}+:(?:[0-9]{1,5}+|\*):'
    + _NOT_NAMES
    + rb'[^:\s"\\]{1,63}+:[^:\s"\\]{1,63}+:([^:\s"\\]{1,256}+)'
)

#: ``bytes.translate`` table: base64 characters ``[A-Za-z0-9+/]`` -> ``a``, all else -> space.
_B64: Final = bytes(
    0x61 if (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in b"+/") else 0x20
    for b in range(256)
)
_B64_40: Final = b"a" * 40
#: In the translated text: the byte before a run of exactly 40 base64 characters,
#: and before one of 41 (whose first may be a JSON escape's letter: "\\nwJal...").
#: Literal prefixes: the search runs in C and stops only where such a run starts.
_RUN40: Final = re.compile(b" " + _B64_40 + rb"(?!a)")
_RUN41: Final = re.compile(b" " + _B64_40 + rb"a(?!a)")
#: In the text, at the byte before such a run, ending where the candidate starts:
#: neither that byte nor the one after the 40 characters is ``=``, and an upper-case
#: letter, a lower-case letter and a digit are among them; group 1 finds a '/' or
#: '+' among them.
_AWS_MIXED: Final = (
    rb"(?s:(?=.{40}(?!=)))"
    rb"(?=[a-z0-9+/]{0,39}+[A-Z])(?=[A-Z0-9+/]{0,39}+[a-z])(?=[A-Za-z+/]{0,39}+[0-9])"
    rb"(?:(?=[A-Za-z0-9]{0,39}+([+/])))?"
)
_AFTER_40: Final = re.compile(rb"[^=]" + _AWS_MIXED)
_AFTER_41: Final = re.compile(rb"\\[ntrbf]" + _AWS_MIXED)  # the escape's letter is not part of it
_AWS_FIRST: Final = re.compile(_AWS_MIXED)  # a run of 40 at the start of the text
#: A candidate without '/' or '+' is a secret when one of these ends at most
#: ``_AWS_BEFORE`` bytes before it (in the lower-cased text).
_AWS_WORDS: Final = (b"aws", b"secret", b"akia", b"asia")
_AWS_BEFORE: Final = 120


def run_formats(text: bytes) -> list[tuple[int, int, bytes]]:
    """Spans of the run-based formats in ``text``."""
    mapped = text.translate(_TOKENMAP)
    i = mapped.find(_RUN20)
    if i == -1:
        return []
    found = []
    glued = -1  # where the glued formats are searched from: a run with a '-' or '_' in its head
    for _ in range(_FEW_RUNS):
        if (
            text[i : i + 2] in _PREFIXES
            or (i and (text[i - 1] == 0x2E or (text[i - 1] == 0x5C and text[i] in _ESCAPES)))
            or text[i + 32 : i + 35] == b"-us"
            or text[i + 36 : i + 40] == b"NRAL"
        ):
            m = _FORMAT_AFTER.match(text, i - 1) if i else _FORMAT_FIRST.match(text)
            if m is not None:
                found.append(m)
        end = mapped.find(b" ", i)
        if glued == -1:  # a glued format: a '-' or '_' and 20 more token characters
            head = len(text) - 20 if end == -1 else end - 20
            glued = i if text.find(b"-", i, head) != -1 or text.find(b"_", i, head) != -1 else -1
        i = -1 if end == -1 else mapped.find(_RUN20, end)
        if i == -1:
            break
    else:  # many runs: the rest with one C call per run
        glued = i if glued == -1 else glued
        runs = map(_START, _RUN20_AFTER.finditer(mapped, i - 1))
        found.extend(filter(None, map(_FORMAT_AFTER.match, repeat(text), runs)))
    if glued != -1:
        found.extend(_GLUED.finditer(text, glued))  # glued formats: one C search
    if not found:
        return []
    return [(m.start(m.lastindex or 0), m.end(), REDACTED_BYTES) for m in found]


def aws_secrets(text: bytes) -> list[tuple[int, int, bytes]]:
    """Spans of bare AWS secret access keys (see the module docstring).

    The first ``_FEW_RUNS`` runs of 40+ base64 characters are judged one by one
    (``bytes.find`` and a regex per run of 40 or 41). Past them, ``_RUN40`` and
    ``_RUN41`` find the runs in C, and each further step is a C call that ``map``
    makes per run or per candidate: Python runs per secret found, not per run.
    """
    mapped = text.translate(_B64)
    i = mapped.find(_B64_40)
    if i == -1:
        return []
    secrets: list[int] = []  # where each starts
    for _ in range(_FEW_RUNS):
        end = mapped.find(b" ", i)
        length = (len(text) if end == -1 else end) - i
        m = None
        if length == 40:
            m = _AFTER_40.match(text, i - 1) if i else _AWS_FIRST.match(text)
        elif length == 41 and i:
            m = _AFTER_41.match(text, i - 1)
        if m is not None and (m.start(1) != -1 or _near(text, m.end())):
            secrets.append(m.end())
        i = -1 if end == -1 else mapped.find(_B64_40, end)
        if i == -1:
            break
    else:  # many runs: the rest with one C call per run and per candidate
        candidates = [
            *filter(None, map(_AFTER_40.match, repeat(text), map(_START, _RUN40.finditer(mapped, i - 1)))),
            *filter(None, map(_AFTER_41.match, repeat(text), map(_START, _RUN41.finditer(mapped, i - 1)))),
        ]
        starts = list(map(_END, candidates))
        slashed = list(map(operator.ne, map(_START, candidates, repeat(1)), repeat(-1)))
        secrets.extend(compress(starts, slashed))
        unslashed = list(compress(starts, map(operator.not_, slashed)))
        if unslashed:
            secrets.extend(_after_words(text.lower(), unslashed))
    if not secrets:
        return []
    return list(zip(secrets, map(operator.add, secrets, repeat(40)), repeat(REDACTED_BYTES)))


def pgpass_lines(text: bytes) -> list[tuple[int, int, bytes]]:
    """Spans of the passwords of ``.pgpass`` lines in ``text`` (JSON text)."""
    first = _PGPASS.search(text)  # one C call for the texts (nearly all) without one
    if first is None:
        return []
    found = list(islice(_PGPASS.finditer(text, first.start()), _PGPASS_CHECKED + 1))
    if len(found) > _PGPASS_CHECKED:
        lines = list(_PGPASS_LINE.finditer(text))
        return list(zip(map(_START, lines, repeat(1)), map(_END, lines, repeat(1)), repeat(REDACTED_BYTES)))
    spans = []
    for m in found:
        window = text[max(0, m.start() - 256) : m.start()]
        before = window.rstrip(_HOST_CHARS)
        host = len(window) - len(before)
        if before.endswith(b"\\") and window[len(before) : len(before) + 1] == b"n":
            host -= 1  # the letter of a JSON "\n" escape
        elif not (before.endswith(b'"') or (not before and m.start() < 256)):
            continue
        if 0 < host <= 253:
            spans.append((m.start(1), m.end(1), REDACTED_BYTES))
    return spans


def base64_runs(text: bytes) -> bool:
    """Whether ``text`` holds a run of 40 or more base64 characters (where ``aws_secrets``
    may look at the text before it)."""
    return text.translate(_B64).find(_B64_40) != -1  # find(): see Redactor._value_spans


def _near(text: bytes, start: int) -> bool:
    """Whether a context word ends in the ``_AWS_BEFORE`` bytes before ``start``."""
    # The word lies wholly within the _AWS_BEFORE + len(word) bytes before it.
    before = text[max(0, start - _AWS_BEFORE - 6) : start].lower()  # 6: the longest word
    return any(before.find(word, max(0, len(before) - _AWS_BEFORE - len(word))) != -1 for word in _AWS_WORDS)


def _after_words(low: bytes, starts: list[int]) -> Iterator[int]:
    """The ``starts`` (in the lower-cased text ``low``) for which ``_near`` holds, with a C
    call per start and word."""
    found = []
    for word in _AWS_WORDS:
        if word in low:  # one pass: a word the text lacks is not looked for per start
            lows = map(max, repeat(0), map(operator.sub, starts, repeat(_AWS_BEFORE + len(word))))
            found.append(map(low.find, repeat(word), lows, starts))
    if not found:
        return iter(())
    return compress(starts, map(operator.le, repeat(0), found[0] if len(found) == 1 else map(max, *found)))
