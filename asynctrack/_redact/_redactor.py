"""``Redactor``: the spec applied to captured bodies (JSON text) and to plain strings."""

from __future__ import annotations

import bisect
import itertools
import re
import threading
from collections.abc import Iterable
from itertools import compress, filterfalse, repeat
from typing import Final

import orjson

from ._common import CACHE_MAX, CACHED_KEY_MAX, QUOTED_REDACTED, REDACTED, REDACTED_BYTES, splice
from ._formats import LITERAL_FORMATS, aws_secrets, base64_runs, pgpass_lines, run_formats
from ._keys import (
    ANY_PAIR,
    ELEMENT,
    MAX_PAIRS,
    SECRET_FIELD,
    SECRET_KEYS,
    STEM_ELEMENT,
    WITHHELD,
    WORDMAP,
    KeyRule,
    Resumable,
    dense_pairs,
    is_default,
    is_lc_secret,
    stem_pairs,
    value_span,
)
from ._stream import open_credential

__all__ = ["Redactor"]

#: How the capture ends a string cut at ``max_field_bytes`` (``_capture``): what comes
#: before it may be the start of a credential the cut split (see ``Redactor._cut_short``).
_TRUNCATED: Final = b"...[$asynctrack: truncated, "
#: The bytes before the mark read for that: what ``open_credential`` reads, escaped.
_CUT_WINDOW: Final = 2048

_LITERALS: Final = tuple(dict.fromkeys(literal for literal, _, _ in LITERAL_FORMATS))
_LITERALS_NO_COLON: Final = tuple(literal for literal in _LITERALS if b":" not in literal)
_FOUND: Final = (-1).__ne__  # of a find() result

#: Where a chunk is cut into pieces for the clean-piece cache (see ``Redactor.prepare``).
#: An unescaped '"' in JSON text is a string's delimiter, so ',"' stands between two
#: members of an object or list (a piece never cuts a key from its value, or a word)
#: unless its '"' closes a string that ends in ',': '"password":"hunter2,"' is cut
#: into '"password":"hunter2' and what follows the string.
_CUT: Final = b',"'
#: Put back where the cuts were when unknown pieces are judged alone, after the last one
#: too: its '"' opens the next key, or closes a string that ended in ',' (without it the
#: piece above, judged last, had no closing quote, so no value under its key: found clean).
_GLUE: Final = b'\x1e"'
#: A piece that starts with ':' (its value cut from a key that ends in ','), as the
#: chunk holds it and as the glued unknown pieces do.
_VALUE_PIECE: Final = b',":'
_GLUED_VALUE_PIECE: Final = b'\x1e":'
#: The coarse cut (see ``Redactor._coarse``): the cuts at ',"' after an object's end.
_COARSE: Final = b'},"'
#: ``Redactor.firsts``: a body left out begins with this many bytes of one kept.
SAME_START: Final = 16
_MIN_PIECE: Final = 12  # bytes per piece on average, at least, for the cache to be tried
_COUNT_FROM: Final = 1 << 16  # chunks longer than this are counted before they are cut
_MAX_PIECE: Final = 1 << 16  # longer pieces are not remembered
_CLEAN_MAX: Final = 1 << 15  # pieces remembered at most ...
_CLEAN_MAX_BYTES: Final = 8 << 20  # ... and their bytes (then the cache starts over)
_START: Final = re.Match.start
_END: Final = re.Match.end
_GROUP: Final = re.Match.group
#: A streamed token's body repeats the token as its chunk's ``text`` and its message's
#: ``content``: with those two values blanked, it is its run's template (see ``prepare``).
_TEXT: Final = b'"text":'
_CONTENT: Final = b'"content":'
#: Where the cut at ',"' falls inside LangChain's secret marker (``{"lc":1,"type":...``):
#: a piece ending so under a credential key ends inside the key's value (see ``_sealed``).
_LC_OPEN: Final = b'{"lc":1'
_NONE: Final[list[bytes]] = []  # (never changed)
_RECENT: Final = 4  # leading parts known clean compared in place (Redactor._clean_leads)


def _overlap(spans: list[tuple[int, int, bytes]]) -> bool:
    """Whether two of ``spans`` (start, end, replacement) overlap."""
    if len(spans) < 2:
        return False
    ordered = sorted(spans)
    return any(b[0] < a[1] for a, b in itertools.pairwise(ordered))


def _json_string(value: str) -> bytes:
    """``value`` as a JSON string (a lone surrogate's bytes each become U+FFFD)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # a lone surrogate
        return orjson.dumps(value.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


class _CleanPieces:
    """Pieces found clean under one set of rules, bounded by count and bytes (then the
    set starts over). Read without the lock (a set lookup is atomic), added to under it.

    ``tokens``: the JSON texts of streamed tokens whose piece (``_token_piece``) is in
    ``clean``, added with it and forgotten with it: a token known clean is looked up as
    it is, its piece not built (see ``Redactor._templates``). ``coarse``: texts between
    coarse cuts whose every piece is in ``clean`` (see ``Redactor._coarse``).
    """

    def __init__(self) -> None:
        self.clean: set[bytes] = set()
        self.tokens: set[bytes] = set()
        self.coarse: set[bytes] = set()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, pieces: set[bytes], tokens: Iterable[bytes] = (), coarse: Iterable[bytes] = ()) -> None:
        tokens = set(tokens)
        coarse = set(coarse)
        size = sum(map(len, pieces)) + sum(map(len, tokens)) + sum(map(len, coarse))
        with self._lock:
            count = len(self.clean) + len(self.tokens) + len(self.coarse)
            if count + len(pieces) + len(tokens) + len(coarse) > _CLEAN_MAX or (
                self._bytes + size > _CLEAN_MAX_BYTES
            ):
                self.clean = set()
                self.tokens = set()
                self.coarse = set()
                self._bytes = 0
            self.clean.update(pieces)
            self.tokens.update(tokens)
            self.coarse.update(coarse)
            self._bytes += size


_SHARED: dict[tuple[str | None, bool], _CleanPieces] = {}
_SHARED_LOCK = threading.Lock()


def _clean_pieces(keys: str | None, detectors: bool) -> _CleanPieces:
    """The clean pieces of the rules ``keys`` and ``detectors`` (``redact_patterns``
    turn the cache off: they may match across pieces)."""
    with _SHARED_LOCK:
        return _SHARED.setdefault((keys, detectors), _CleanPieces())


def _key_text(raw: bytes) -> str:
    """A key as JSON text writes it (``raw``), as the key rule judges keys: its escapes
    read (twice in JSON text inside a string), so that ``"token\\t"`` is ``token`` and a tab."""
    key = raw.decode("utf-8", "replace")
    for _ in range(2):
        if "\\" not in key:
            break
        try:
            key = orjson.loads(b'"' + key.encode("utf-8", "surrogatepass") + b'"')
        except orjson.JSONDecodeError:
            break
    return key


def _template_parts(body: bytes, token: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``body`` around its first ``"text":<token>`` and the first ``"content":<token>``
    after it (``token``: JSON text), without the two tokens; ``None`` if it lacks either."""
    start = body.find(_TEXT + token)
    if start == -1:
        return None
    start += len(_TEXT)
    after = start + len(token)
    second = body.find(_CONTENT + token, after)
    if second == -1:
        return None
    second += len(_CONTENT)
    return body[:start], body[after:second], body[second + len(token) :]


def filled_templates(bodies: list[bytes], tokens: list[bytes]) -> list[bool] | None:
    """Whether each of ``bodies[1:]`` is the template of ``bodies[0]`` (a streamed token's
    body holding the token ``tokens[0]``, JSON text) filled with its own token (``tokens``):
    what ``Redactor._templates`` checks a body at a time, here in C loops (one join and
    one comparison each); ``None`` if ``bodies[0]`` is not a token's body as the handler
    writes it, or its template begins with fewer than ``SAME_START`` bytes."""
    parts = _template_parts(bodies[0], tokens[0])
    if parts is None or len(parts[0]) < SAME_START:
        return None
    head, middle, tail = parts
    rest = tokens[1:]
    expected = map(b"".join, zip(repeat(head), rest, repeat(middle), rest, repeat(tail)))
    return list(map(bytes.__eq__, itertools.islice(bodies, 1, None), expected))


def _token_piece(token: bytes) -> bytes:
    """The piece of a streamed token's body that holds its token (JSON text) twice, as
    the cut at ',"' leaves it: its chunk's ``text`` and its message's ``content``."""
    return b"".join((b'text":', token, b',"content":', token, b"}"))


class Redactor:
    """Applies the spec (``asynctrack._redact``) to JSON text (captured bodies) and plain text.

    Args:
        keys: the ``redact_keys`` regex (searched in normalized keys), or ``None``.
        patterns: extra regexes (``redact_patterns``), run on every text.
        detectors: run the built-in value detectors.
    """

    def __init__(self, keys: str | None, patterns: tuple[str, ...] = (), detectors: bool = True) -> None:
        # With key rules off, pydantic's SecretStr field (what its __dict__ holds) still is.
        self.key_rule: KeyRule | None = KeyRule(keys if keys is not None else SECRET_FIELD)
        self._default_keys = keys is not None and is_default(keys)
        self._detectors = detectors
        self._patterns = tuple(re.compile(p.encode()) for p in patterns)
        self._raw_keys: dict[bytes, bool] = {}
        self.texts: dict[str, str] = {}  # text() of short texts, remembered
        # Set by prepare(): for each body of the chunk at hand (by identity), whether it
        # needs the full path, else the spans to redact. Other texts: the full path.
        self._chunk: dict[int, tuple[bytes, bool, list[tuple[int, int, bytes]]]] = {}
        self._bodies: dict[int, bytes] = {}  # every body of the chunk at hand, by id
        self._filled: list[bytes] = _NONE  # those of them left out of _bodies (see prepare)
        #: The bodies of the chunk at hand but some that begin with the same ``SAME_START``
        #: bytes as one of them (a streamed token's body equal to its run's template
        #: filled with its token): a prefix that short is every body's if it is theirs.
        self.firsts: list[bytes] = []
        #: The pieces of the chunk's streamed tokens not known clean, and their tokens.
        self._token_of: dict[bytes, bytes] = {}
        #: The last leading parts (see ``prepare``) found in the clean-piece cache, the newest
        #: first: a body that begins with one is compared with it (memcmp) rather than hashed
        #: (~1 KB a model start; a round of calls alternates between a few).
        self._clean_leads: list[bytes] = []
        # Pieces of bodies (cut at ',"') found clean on their own (see prepare()): one set
        # for every redactor of the same rules in this process (200 trackers, one cache).
        self._pieces_seen = _clean_pieces(keys, detectors)

    # -- chunks ----------------------------------------------------------------------------

    def prepare(  # noqa: PLR0915 - one frame per chunk
        self,
        bodies: list[bytes] | None,
        shared: list[bytes | int | None] | None = None,
        filled: list[bytes] | None = None,
        fillers: list[bytes] = _NONE,
    ) -> bytes:
        """Scan a chunk of bodies at once (``None``: forget the last chunk).

        The passes over the joined chunk cost about what they cost over each body,
        plus one Python call per chunk instead of per body, and each byte is scanned
        once: the spans found are kept per body, and ``json()`` of the very same
        ``bytes`` object only splices them in. A body where a credential key holds a
        list or object (or a chunk dense with stems) takes the full path instead.

        Before that, the clean-piece cache: the chunk is cut at each ``,"`` and only
        the pieces not already known clean are scanned (joined); if they are clean,
        so is every body, and they are remembered. Else, and when most pieces are
        new, the full scan runs; a chunk it finds clean has its pieces remembered.

        ``shared``: for each body, what most of it shares with other bodies, or
        ``None``. The JSON text of the streamed token it holds (its chunk's ``text``
        and its message's ``content``): the body of a streamed token is its run's
        template but for those two values; a body whose template is known clean is
        not cut into pieces, its token's two members, ``text":<token>,"content":<token>}``
        (a piece as the cut leaves it), are looked up and scanned as a piece instead (a
        key, its value and a word never cross a string's quotes; the bare AWS secret
        key rule, which reads the bytes before a run, is kept out as ``_learn`` keeps
        it out: no template or piece holding a run of 40 base64 characters is
        remembered). Or the length of its leading part (a model's description before
        its messages, the same at every call), which ends where a piece does (before a
        ``,"``): a known clean one is not cut into pieces. A template or leading part
        is remembered once its body was found clean. Returns the joined chunk.

        ``filled``: more bodies of streamed tokens, each the template of a body of
        ``bodies`` (its ``shared`` a token's JSON text) filled with its own token, the
        JSON text in ``fillers`` (``filled_templates`` found them so): judged as those
        bodies are, by their token's piece, with no Python step each.
        """
        if bodies is None:
            self._chunk = {}
            self._bodies = {}
            self.firsts = []
            self._filled = _NONE
            return b""
        judged = bodies
        if filled:
            bodies = bodies + filled
        joined = b"\x1e".join(bodies)
        # The filled bodies are left out of _bodies while the chunk is clean (a dict entry
        # each, for bodies most often written a row at a time): see filled_plain.
        self._filled = filled if filled and not self._patterns else _NONE
        self._bodies = (
            dict(zip(map(id, judged), judged, strict=True))
            if self._filled
            else dict(zip(map(id, bodies), bodies, strict=True))
        )
        pieces, coarse, templates = self._cut(judged, shared, joined, fillers)
        token_of = self._token_of
        if pieces is not None:
            clean = self._pieces_seen.clean
            # All known (most chunks of a long run): a look-up per piece, no set built.
            unknown = set() if clean.issuperset(pieces) else set(pieces).difference(clean)
            # Mostly new pieces: the scan below would cost what the whole chunk's does.
            if not unknown or (
                sum(map(len, unknown)) * 4 <= len(joined)
                and self._learn(unknown, _GLUE + _GLUE.join(unknown) + _GLUE)
            ):
                self._chunk = {}  # every piece is clean on its own, so is every body
                self._remember_templates(templates)
                self._remember_coarse(coarse)
                return joined
        if joined.find(_TRUNCATED) != -1:  # (no piece holding it is remembered: see _learn)
            # A string cut short: json() judges its end (the full path, every body).
            self._chunk = {id(body): (body, True, []) for body in bodies}
            return joined
        # C loops only for what every body needs: Python runs per span found, not per body.
        offsets = list(itertools.accumulate(map((1).__add__, map(len, bodies)), initial=0))
        found: dict[int, list[tuple[int, int, bytes]]] = {}
        full: set[int] = set()
        spans: list[tuple[int, int, bytes]] = []
        if self.key_rule is not None:
            keys = self._key_spans(joined)
            if keys is None:
                # Dense with stems as a whole (a frame of many model starts): body by body,
                # as json() would judge each (one dense alone takes the full path).
                keys = self._body_key_spans(bodies, offsets, full)
            spans, containers = keys
            full.update(bisect.bisect_right(offsets, position) - 1 for position in containers)
        if self._detectors:
            spans.extend(self._value_spans(joined))
        for start, end, replacement in spans:
            index = bisect.bisect_right(offsets, start) - 1
            base = offsets[index]
            if end - base > len(bodies[index]):  # never seen: a match across two bodies
                full.add(index)
            found.setdefault(index, []).append((start - base, end - base, replacement))
        for index, body_spans in found.items():
            if _overlap(body_spans):
                # A value span inside (or across) a key rule's span: the full path applies
                # the key rules first and scans their result, as json() does for any text.
                full.add(index)
        self._chunk = {id(bodies[i]): (bodies[i], i in full, found.get(i, [])) for i in full.union(found)}
        if self._chunk:
            self.keep_filled()
        elif pieces is not None:
            # Nothing was learned since above. The tokens' pieces are not in the joined
            # chunk as they are: they are left to a later scan of their own.
            if templates:
                unknown.difference_update(token_of)
                self._remember_templates(templates)
            if self._learn(unknown, joined, scanned=True):
                self._remember_coarse(coarse)
        return joined

    def _body_key_spans(
        self, bodies: list[bytes], offsets: list[int], full: set[int]
    ) -> tuple[list[tuple[int, int, bytes]], list[int]]:
        """The key rules' spans and containers of each of ``bodies``, at its offset in the
        joined chunk (``offsets``); the index of a body dense with stems alone is added
        to ``full``."""
        spans: list[tuple[int, int, bytes]] = []
        containers: list[int] = []
        for index, body in enumerate(bodies):
            found = self._key_spans(body)
            if found is None:
                full.add(index)
                continue
            base = offsets[index]
            spans += [(start + base, end + base, replacement) for start, end, replacement in found[0]]
            containers += [position + base for position in found[1]]
        return spans, containers

    def _cut(
        self,
        bodies: list[bytes],
        shared: list[bytes | int | None] | None,
        joined: bytes,
        fillers: list[bytes] = _NONE,
    ) -> tuple[list[bytes] | None, list[bytes], list[bytes]]:
        """The pieces of the chunk to look up (``None``: the cache does not apply), its
        coarse parts not known clean, and its templates not known (see ``prepare``)."""
        self._token_of = {}
        self.firsts = bodies
        if shared is None or self._patterns:
            cut = self._pieces(joined)
            return (None, [], []) if cut is None else (*cut, [])
        rest, tokens, templates = self._templates(bodies, shared)
        if fillers:
            tokens += fillers
        cut = self._pieces(b"\x1e".join(rest)) if rest else ([], [])
        if cut is None:
            return None, [], templates
        if tokens:
            # A token known clean is its piece known clean: only new ones are built.
            new = set(tokens).difference(self._pieces_seen.tokens)
            if new:
                self._token_of = dict(zip(map(_token_piece, new), new, strict=True))
                cut[0].extend(self._token_of)
        return (*cut, templates)

    def _coarse(self, text: bytes) -> tuple[bytes, list[bytes]]:
        """``text`` cut at the coarse cuts (``},"``), then the parts not known clean joined
        again at their cuts (what is left to cut into pieces), and those parts.

        A coarse cut is a cut into pieces too: a part followed by a coarse cut, with the
        cut's '}', is a row of whole pieces. Such a part is remembered
        (``_remember_coarse``) once each of its pieces was found clean, and a part known
        clean is its pieces known clean, at one look-up (the messages of a model start
        that the next call's start repeats; a model's description; the members of a
        response that every call has). The last part, which no cut follows, is always
        cut into pieces (never remembered: the same text followed by '}' would be
        another row of pieces).
        """
        parts = text.split(_COARSE)
        last = parts.pop()
        if not parts:
            return text, parts
        unknown = list(filterfalse(self._pieces_seen.coarse.__contains__, parts))
        unknown.append(last)
        rest = _COARSE.join(unknown)
        unknown.pop()
        return rest, unknown

    def _remember_coarse(self, parts: list[bytes]) -> None:
        """Remember ``parts`` (``_coarse``), whose pieces were found clean, as clean: but
        a part holding a piece ``_learn`` does not remember (longer than ``_MAX_PIECE``,
        or ending in LangChain's secret marker's start; a piece holding a run of 40
        base64 characters is never found clean there)."""
        if parts:
            kept = [part for part in parts if len(part) < _MAX_PIECE]
            if b"\x1e".join(kept).find(_LC_OPEN) != -1:
                kept = [part for part in kept if part.find(_LC_OPEN) == -1]
            if kept:
                self._pieces_seen.add(set(), coarse=kept)

    def _templates(
        self, bodies: list[bytes], shared: list[bytes | int | None]
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The texts to cut into pieces (bodies, or what follows a known leading part),
        the JSON texts of the tokens held by the others (their pieces: ``_token_piece``),
        and the templates and leading parts not known yet (see ``prepare``).

        A body is cut into pieces whole when its template (or leading part) is neither
        known clean nor that of a body before it in the chunk (which is cut into
        pieces: if that body is clean, so is the template, and so is this body if its
        token's piece is). The tokens of one run come in a row: a body is first
        compared with the template of the body before it, filled with its own token
        (one join and one comparison).
        """
        clean = self._pieces_seen.clean
        rest: list[bytes] = []
        tokens: list[bytes] = []
        templates: dict[bytes, None] = {}
        last: tuple[bytes, bytes, bytes] | None = None
        self.firsts = firsts = []
        same = False  # whether last[0], the body in firsts it was taken from, is SAME_START long
        known = self._clean_leads
        for body, token in zip(bodies, shared, strict=True):
            if type(token) is not bytes:
                firsts.append(body)
                if type(token) is int and 0 < token < len(body):
                    for lead in known:  # the last ones known clean: compared, not hashed
                        if token == len(lead) and body.startswith(lead):
                            break
                    else:
                        lead = body[:token]
                        if lead in clean:
                            known.insert(0, lead)
                            del known[_RECENT:]
                        elif lead not in templates:
                            templates[lead] = None
                            rest.append(body)
                            continue
                    rest.append(body[token:])
                    continue
                rest.append(body)
                continue
            if last is None or b"".join((last[0], token, last[1], token, last[2])) != body:
                firsts.append(body)
                last = _template_parts(body, token)
                same = last is not None and len(last[0]) >= SAME_START
                if last is None:  # not a streamed token's body as the handler writes it
                    rest.append(body)
                    continue
                template = b'""'.join(last)
                if template not in clean and template not in templates:
                    rest.append(body)
                    templates[template] = None
                    continue
            elif not same:
                firsts.append(body)
            tokens.append(token)
        return rest, tokens, list(templates)

    def _remember_templates(self, templates: list[bytes]) -> None:
        """Remember ``templates``, whose bodies were found clean, as clean (a template
        holding a run of 40 base64 characters is not: see ``_learn``)."""
        kept = [t for t in templates if len(t) <= _MAX_PIECE]
        if kept:
            joined = b"\x1e".join(kept)
            if base64_runs(joined):  # (a run never crosses the separator)
                kept = [t for t in kept if not base64_runs(t)]
            if joined.find(_LC_OPEN) != -1:
                kept = self._sealed(kept)
        if kept:
            self._pieces_seen.add(set(kept))

    def _pieces(self, joined: bytes) -> tuple[list[bytes], list[bytes]] | None:
        """``joined`` cut into pieces for the clean-piece cache, but for its coarse parts
        known clean (``_coarse``), and the coarse parts not known; or ``None`` when the
        cache does not apply (``redact_patterns`` may match across pieces) or does not
        pay (pieces too short: a hostile text must not cost a Python object per byte;
        judged on the pieces of all of ``joined`` when it is long, else on those cut)."""
        if self._patterns:
            return None
        if len(joined) > _COUNT_FROM and joined.count(_CUT) * _MIN_PIECE > len(joined):
            return None
        text, coarse = self._coarse(joined)
        pieces = text.split(_CUT) if text else []
        return None if len(pieces) * _MIN_PIECE > len(joined) else (pieces, coarse)

    def _learn(self, unknown: set[bytes], text: bytes, scanned: bool = False) -> bool:
        """Whether ``text`` (the ``unknown`` pieces, or the whole chunk if ``scanned``,
        already found clean) is clean; if so, remember the pieces.

        A piece clean on its own is clean in any body (the key rules and the value
        detectors only read within a piece: a key, its value and a word never cross a
        cut), with one exception: the bare AWS secret key rule, which reads the 120
        bytes before a run of 40 base64 characters. A text holding such a run is not
        remembered. Nor is a text holding a piece that starts with ':' (a key ending in
        ',' is cut from its value there: '"password,":"x"'; judged alone, the value has
        no key). Nor is a text holding a string cut short (``_TRUNCATED``: its end is
        judged on the full path, ``_cut_short``).
        """
        if base64_runs(text):  # first: then no scan of it looks for bare AWS keys
            return False
        if (
            text.find(_VALUE_PIECE) != -1
            or text.find(_GLUED_VALUE_PIECE) != -1
            or text.find(_TRUNCATED) != -1
        ):
            return False
        if not scanned:
            if self.key_rule is not None:
                keys = self._key_spans(text)
                if keys is None or keys[0] or keys[1]:
                    return False
            if self._detectors and self._value_spans(text, aws=False):
                return False
        pieces = {piece for piece in unknown if len(piece) <= _MAX_PIECE}
        if text.find(_LC_OPEN) != -1:
            pieces = set(self._sealed(pieces))
        token_of = self._token_of
        if token_of:  # the tokens whose pieces are remembered, with them
            tokens = set(map(token_of.get, pieces))
            tokens.discard(None)
            self._pieces_seen.add(pieces, tokens)  # type: ignore[arg-type]
        else:
            self._pieces_seen.add(pieces)
        return True

    def _sealed(self, pieces: Iterable[bytes]) -> list[bytes]:
        """``pieces`` but those that end inside a credential key's value.

        A JSON string never holds an unescaped ',"', so only a list or object under a
        credential key can be cut; the only one found clean is LangChain's secret
        marker, cut after its ``{"lc":1``. Such a piece, remembered clean, would let
        any object under the key through whose first member is ``"lc":1``: it is judged
        as the text it is (an object it does not close: a container, replaced whole)
        and left out, so a body holding it is scanned whole each time.
        """
        out = []
        for piece in pieces:
            if piece.endswith(_LC_OPEN):
                keys = self._key_spans(b'"' + piece) if self.key_rule is not None else ([], [])
                if keys is None or keys[1]:
                    continue
            out.append(piece)
        return out

    @property
    def filled_plain(self) -> bool:
        """Whether the ``filled`` bodies of the chunk at hand, all plain (the chunk is
        clean), were left out of ``unchanged()`` (until ``keep_filled``)."""
        return bool(self._filled) and not self._chunk

    def keep_filled(self) -> None:
        """Add the ``filled`` bodies of the chunk at hand to the bodies ``unchanged()``
        returns (the same dict) and ``json()`` knows, if they were left out."""
        if self._filled:
            self._bodies.update(zip(map(id, self._filled), self._filled, strict=True))
            self._filled = _NONE

    def unchanged(self) -> dict[int, bytes]:
        """The bodies of the chunk at hand (by id) that ``json()`` returns as they are, but
        the ``filled`` ones of a clean chunk (``filled_plain``, ``keep_filled``)."""
        if self._patterns:
            return {}
        if not self._chunk:
            return self._bodies
        return {key: body for key, body in self._bodies.items() if key not in self._chunk}

    # -- JSON text ---------------------------------------------------------------------

    def json(self, text: bytes, own_token: bool = False) -> bytes | None:
        """``text`` (JSON as orjson writes it) with credentials redacted.

        Returns ``None`` when a credential key holds a JSON list or object: the
        caller then redacts the parsed value (``structure``) and calls this again.
        ``own_token``: the key ``token`` first in ``data`` is the library's own.
        """
        entry = self._chunk.get(id(text))
        if entry is not None and entry[0] is text and not entry[1]:
            out = splice(text, list(entry[2])) if entry[2] else text  # scanned by prepare()
        elif entry is None and self._bodies.get(id(text)) is text:
            out = text  # scanned by prepare(): nothing found
        else:
            if text.find(_TRUNCATED) != -1:
                text = self._cut_short(text)
            if self.key_rule is not None:
                scanned = self._keys(text, own_token)
                if scanned is None:
                    return None
                text = scanned
            out = splice(text, self._value_spans(text)) if self._detectors else text
        for pattern in self._patterns:
            out = pattern.sub(REDACTED_BYTES, out)
        return out

    def _cut_short(self, text: bytes) -> bytes:
        """``text`` with the start of a credential that a cut at ``max_field_bytes`` split
        redacted: the end of each string cut short (before its ``_TRUNCATED`` mark, at
        most ``_CUT_WINDOW`` bytes read) judged as a token stream's end
        (``open_credential``), then redacted from where the credential starts."""
        spans = []
        end = text.find(_TRUNCATED)
        while end != -1:
            window = text[max(0, end - _CUT_WINDOW) : end]
            quote = window.rfind(b'"')
            while quote != -1 and (quote - len(window[:quote].rstrip(b"\\"))) % 2:
                quote = window.rfind(b'"', 0, quote)  # an escaped quote: inside the string
            window = window[quote + 1 :]  # from the string's start, if it is in the window
            for skip in range(8):  # the window may start inside an escape or a character
                try:
                    head = orjson.loads(b'"' + window[skip:] + b'"')
                except orjson.JSONDecodeError:
                    continue
                start = open_credential(head, self.key_rule)
                if start != -1:
                    tail = _json_string(head[start:])[1:-1]
                    cut = end - len(tail) if window.endswith(tail) else end - len(window)
                    spans.append((cut, end, REDACTED_BYTES))
                break
            end = text.find(_TRUNCATED, end + 1)
        return splice(text, spans) if spans else text

    def structure(self, value: object, own_token: bool = False) -> object:
        """``value`` (parsed JSON) with every list or object under a credential key replaced."""
        rule = self.key_rule
        if rule is None:
            return value
        if own_token and type(value) is dict and type(value.get("data")) is dict and "token" in value["data"]:
            data = dict(value["data"])
            token = self.structure(data.pop("token"))
            rest = self.structure(data)
            return {**value, "data": {"token": token, **(rest if type(rest) is dict else {})}}
        if type(value) is dict:
            out: dict[str, object] = {}
            for key, item in value.items():
                if rule(key) and not is_lc_secret(item):
                    out[key] = REDACTED
                else:
                    out[key] = self.structure(item)
            return out
        if type(value) is list:
            return [self.structure(item) for item in value]
        return value

    def _keys(self, text: bytes, own_token: bool = False, budget: int = 0) -> bytes | None:
        """Key rules on ``text``: ``None`` when a list or object must be replaced."""
        found = self._key_spans(text, own_token, budget)
        if found is None:
            return self._dense(text, own_token)
        spans, containers = found
        if containers:
            return None
        return splice(text, spans) if spans else text

    def _key_spans(
        self, text: bytes, own_token: bool = False, budget: int = 0
    ) -> tuple[list[tuple[int, int, bytes]], list[int]] | None:
        """The spans the key rules redact in ``text``, and the positions of lists or
        objects under credential keys; ``None`` for a text dense with stems (with no
        ``budget``: at most this many pairs judged, ``text`` being one JSON string)."""
        matches: Iterable[re.Match[bytes]] | None = (
            stem_pairs(text) if self._default_keys else Resumable(ANY_PAIR, text)
        )
        containers: list[int] = []
        if matches is None:
            if not budget:
                return None
            matches = dense_pairs(text)
        elif not matches:
            return self._element_spans(text), containers
        words = text.translate(WORDMAP) if self._default_keys else b""
        spans = self._element_spans(text)
        n = len(text)
        resume = 0
        for m in matches:
            if m.start() < resume:
                continue  # inside a value already redacted
            if budget:
                budget -= 1
                if not budget:
                    spans.append((m.start(), n - 1, WITHHELD))  # up to the closing quote
                    break
            pos = m.end()
            k1 = m.end(1)
            # With the default rule, the key's whole word, however long (linear: the
            # matches are apart, and each holds a separator, where the next one's look
            # back stops).
            k0 = words.rfind(b" ", 0, m.start()) + 1 if self._default_keys else m.start(1)
            if own_token and k0 == 10 and text.startswith(b'{"data":{"token":'):
                continue  # the streamed token's own field
            raw = text[k0:k1]
            # An unescaped '"' right before ':' ends a JSON key (orjson writes no spaces).
            structural = m.group(2) == b'"' and pos == k1 + 2
            if self._judge(text, raw, k0, k1, m.group(2)) and pos < n:
                span, resume = value_span(text, pos, structural)
                if span is None:  # a list or object under a credential key
                    containers.append(m.start())
                    continue
                if (
                    structural
                    and raw in SECRET_KEYS
                    and text[k0 - 2 : k0] == b'{"'
                    and text[resume : resume + 1] == b"}"
                ):
                    # pydantic's SecretStr as its __dict__ ({"_secret_value": ...}): the whole object.
                    span, resume = (k0 - 2, resume + 1, QUOTED_REDACTED), resume + 1
                if span[1] > span[0]:
                    spans.append(span)
                if type(matches) is Resumable:
                    matches.resume = resume
        return spans, containers

    def _element_spans(self, text: bytes) -> list[tuple[int, int, bytes]]:
        """The texts of XML-style elements whose tag name the key rules match
        (``<db_password>x</db_password>``): C loops per element, Python per distinct tag
        name, at most ``MAX_PAIRS`` of them (past them, in a junk text, the elements of
        the tags not judged are redacted too)."""
        if text.find(b"</") == -1:  # one C call for the texts (nearly all) without one
            return []
        hits = list((STEM_ELEMENT if self._default_keys else ELEMENT).finditer(text))
        if not hits:
            return []
        tags = list(map(_GROUP, hits, repeat(1)))
        distinct = itertools.islice(dict.fromkeys(tags), MAX_PAIRS)
        judged = {tag: self._judge(text, tag, 0, 0, None) for tag in distinct}
        secret = list(compress(hits, map(judged.get, tags, repeat(True))))
        return list(zip(map(_START, secret, repeat(2)), map(_END, secret, repeat(2)), repeat(REDACTED_BYTES)))

    def _judge(self, text: bytes, raw: bytes, k0: int, k1: int, quote: bytes | None) -> bool:
        """Whether the key ``raw`` (``text[k0:k1]``, closed by ``quote`` if quoted) names
        a credential (cached)."""
        rule = self.key_rule
        assert rule is not None
        hit = self._raw_keys.get(raw)
        if hit is None:
            hit = rule(_key_text(raw))
            if len(self._raw_keys) < CACHE_MAX and len(raw) <= CACHED_KEY_MAX:
                self._raw_keys[raw] = hit
        if quote and not hit and k0 > 0 and text[k0 - 1] != quote[-1]:
            # A quoted key may hold more than this word ("API key for prod"): judge it
            # whole, however long (linear: back to the quote of its kind before it at most,
            # and each match ends in one).
            opening = text.rfind(quote[-1:], 0, k0)
            if opening != -1:
                hit = rule(_key_text(text[opening + 1 : k1]))
        return hit

    def _dense(self, text: bytes, own_token: bool) -> bytes:
        """``text`` dense with stems: key rules on the parsed structure, then each string
        on its own, with at most ``MAX_PAIRS`` pairs judged per string."""
        try:
            parsed = self.structure(orjson.loads(text), own_token)
        except orjson.JSONDecodeError:  # not JSON (never seen): all of it is suspect
            return orjson.dumps(REDACTED)
        return orjson.dumps(self._strings(parsed))

    def _strings(self, value: object) -> object:
        if type(value) is str:
            encoded = orjson.dumps(value)
            out = self._keys(encoded, budget=MAX_PAIRS)
            return value if out is None or out == encoded else orjson.loads(out)
        if type(value) is dict:
            return {key: self._strings(item) for key, item in value.items()}
        if type(value) is list:
            return [self._strings(item) for item in value]
        return value

    # -- any text (JSON text included) --------------------------------------------------

    def values(self, text: bytes) -> bytes:
        """``text`` with the value detectors and ``redact_patterns`` applied."""
        if self._detectors:
            text = splice(text, self._value_spans(text))
        for pattern in self._patterns:
            text = pattern.sub(REDACTED_BYTES, text)
        return text

    def _value_spans(self, text: bytes, aws: bool = True) -> list[tuple[int, int, bytes]]:
        """The spans the value detectors redact in ``text`` (``aws=False``: but bare AWS
        secret keys, for a text known to hold no run of 40 base64 characters)."""
        spans = run_formats(text)
        # The literals present, with a C call per literal (a short text has none, most
        # often). find(), not `in`: CPython 3.11's `bytes in bytes` first tries the needle
        # as an int and formats a TypeError each time (~1,150 instructions).
        literals = _LITERALS if text.find(b":") != -1 else _LITERALS_NO_COLON
        present = set(compress(literals, map(_FOUND, map(text.find, literals))))
        for literal, pattern, group in LITERAL_FORMATS if present else ():
            if literal in present:
                # C calls per hit (a text dense with hits costs no Python bytecode per hit).
                hits = list(pattern.finditer(text))
                if hits:
                    starts = map(_START, hits, repeat(group))
                    spans.extend(zip(starts, map(_END, hits, repeat(group)), repeat(REDACTED_BYTES)))
        if text.find(b":") != -1:
            spans.extend(pgpass_lines(text))
        if aws and len(text) >= 40:
            spans.extend(aws_secrets(text))
        return spans

    def text(self, value: str) -> str:
        """A plain string with the whole spec applied (as if it were a JSON string value)."""
        cached = self.texts.get(value)
        if cached is not None:
            return cached
        encoded = _json_string(value)
        out = self.json(encoded)
        result: str = value if out is None or out == encoded else orjson.loads(out)
        if len(value) <= 256 and len(self.texts) < CACHE_MAX:
            self.texts[value] = result
        return result

    def may_match(self, text: str) -> bool:
        """Whether the spec redacts anything in ``text`` (as ``text()`` sees it: as a JSON
        string, so ``{"password": "x"}`` in it is JSON text inside a string)."""
        raw = _json_string(text)
        if self._patterns:
            return True
        # Every key rule reads a key, then ':' or '=', or an element's closing tag
        # (streamed prose most often has none: three searches instead of the stems'
        # eight). Without them no key is found even in a text dense with stems, which the
        # full spec then parses and reads the same way: ``False`` there too.
        if self.key_rule is not None and (
            raw.find(b":") != -1 or raw.find(b"=") != -1 or raw.find(b"</") != -1
        ):
            keys = self._key_spans(raw)
            if keys is None or keys[0] or keys[1]:
                return True
        return bool(self._detectors and self._value_spans(raw))
