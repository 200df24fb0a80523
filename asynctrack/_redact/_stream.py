"""Streamed tokens: a run's tokens redacted as one text."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import orjson

from ._common import REDACTED
from ._formats import SLUG

__all__ = ["StreamRedactor", "open_credential"]

# -- streamed tokens ----------------------------------------------------------------------

_TAIL: Final = 256
_QUOTE_MARKS: Final = ('"', "'")
#: The start of a credential format (the detectors' prefixes that are at least three
#: characters long and rare in prose), matched where a run of credential characters
#: starts at the end of the stream: the stream has shown the format's start, not its end.
#: Left out: prefixes that also start identifiers a model writes in code (``hf_`` as in
#: ``hf_hub_download``, ``npm_`` as in ``npm_config_``); ``dapi`` needs four hex digits
#: after it (``dapibus``).
_PREFIX: Final = re.compile(
    r"sk-|[sr]k_(?:live|test)_|whsec_|pk-lf-|lsv2_|ls__|gh[pousr]_|github_pat_"
    r"|gl(?:pat|ptt|dt|rt|cbt|oas|ft|imt|soat|agent|ffct)-|GR1348941|xox[abposre]-|xapp-"
    r"|A(?:KIA|SIA|BIA|CCA)|AIza|GOCSPX-|pypi-AgEIcHlwaS5vcmc|gsk_|xai-|r8_|pplx-|tvly-"
    r"|pcsk_|shp(?:at|ca|pa|ss)_|sq0(?:atp|csp)-|NR(?:AK|II|JS)-|HRKU-|do[opr]_v1_|ATATT3"
    r"|lin_(?:api|oauth)_|ntn_|PMAK-|dapi(?=[0-9a-f]{4})|sntry[su]_|AGE-SECRET-KEY-|SG\.|ya29\."
    r"|hv[sbr]\.|dp\.(?:pt|st|ct|sa|scim|audit)\.|eyJ"
)
_CREDENTIAL_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."
#: A prefix glued after a '-' or '_' (``ci-ghp_``), anywhere in the run, as the detectors
#: find the formats (``_formats._GLUED``), where what follows it up to the text's end can
#: still become its key: nothing yet, or no slug's start (``task-sk-12``,
#: ``label_AKIA_missing``, ``report-eyJson``: kept, as the whole text keeps them). SendGrid's
#: ``SG.`` is not found glued (its detector asks for no word character before it).
_GLUED_PREFIX: Final = re.compile(
    r"[-_](?:" + _PREFIX.pattern.replace(r"|SG\.", "") + r")(?:\Z|(?!" + SLUG + "))"
)
#: The characters at the end of the run searched for a glued prefix (a C attempt per '-'
#: or '_': a 256 KiB token dense with them costs no more than 4 KiB of it). A prefix
#: further back is a credential's of more than that many characters, whose full match
#: the whole text finds; only its run's continuation in a later token would be missed.
_GLUED_WINDOW: Final = 4096


def _open_prefix(text: str) -> int:
    """Where, in ``text``, a credential format starts whose run of credential characters
    reaches the end of ``text``, or -1.

    A format starts where that last run starts or right after a '.' in it, or after a
    '-' or '_' in it (``_GLUED_PREFIX``, in its last ``_GLUED_WINDOW`` characters): one
    ``rstrip`` (as long as the run), a C search and a match per '.', not a search at
    every character.
    The whole run is read, however far back it starts: a batch of tokens may hold a
    format's prefix and more than a key's worth of characters after it.
    """
    start = len(text.rstrip(_CREDENTIAL_CHARS))
    glued = _GLUED_PREFIX.search(text, max(start, len(text) - _GLUED_WINDOW))
    first = glued.start() + 1 if glued is not None else -1
    while start < len(text) and (first == -1 or start < first):
        if _PREFIX.match(text, start) is not None:
            return start
        dot = text.find(".", start)
        if dot == -1:
            break
        start = dot + 1
    return first


_CREDENTIAL_RUN: Final = re.compile(r"[A-Za-z0-9_\-.]*+")
#: A private key block's first line (PEM, ssh.com's, PuTTY's): the key follows, over
#: more characters than a tail holds.
_KEY_BLOCK: Final = re.compile(
    r"-----BEGIN (?:[A-Z0-9]{1,20}+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"
    r"|---- BEGIN SSH2 (?:ENCRYPTED )?PRIVATE KEY ----|PuTTY-User-Key-File-"
)
#: What ends a key block (the key's last line; PuTTY's MAC line follows its key).
_KEY_BLOCK_ENDS: Final = ("-----END", "---- END", "Private-MAC:")
#: ``open_`` while a key block is open: redacted whole, token by token, up to its end.
_IN_KEY_BLOCK: Final = "-----BEGIN"
#: Read backwards from a quote: the separator and the key before it (``"password": "``
#: reversed is ``" :"drowssap``); the key, reversed: a quoted key whole, else its last
#: word, up to the tail's length (a key longer than the tail is judged by its end). A
#: match at the start of the reversed text costs what the key's length does, wherever
#: the quote is. Blanks as the key rules read them (``_keys._BLANKS``): up to 64 spaces
#: or tabs, a tab also as JSON text writes it (``\\t``).
_KEY_BEFORE_REVERSED: Final = re.compile(
    # ':=', '=>', '==', '===', '||=', '&&=', '??=' reversed too
    r"""(?:[ \t]|t\\){0,64}+(?:=:|>=|=\|\||=&&|=\?\?|={1,3}+|:)(?:[ \t]|t\\){0,64}+"""
    r"""(?:"((?:[^"\n]|"\\){1,256}+)"|'([^'\n]{1,256}+)'|["']?([A-Za-z0-9_.\-]{1,256}+))"""
)
#: The characters before a quote that ``_KEY_BEFORE_REVERSED`` reads at most.
_KEY_WINDOW: Final = 520
#: An XML-style element's opening tag (``<db_password>``), matched at the text's last '<':
#: the text ends inside the element's text. Its tag name (group 1) is judged as a key.
_OPEN_ELEMENT: Final = re.compile(r"<([A-Za-z_][A-Za-z0-9_.\-:]{0,127}+)(?:[ \t][^<>]{0,256}+)?>")
#: ``open_`` while the text of an element under a credential tag is open: up to the next '<'.
_IN_ELEMENT: Final = "<"
#: An unfinished tag at the text's end (``<``, ``</``, ``</api_k``): an element's text
#: that it follows ends at its '<', and the element is judged from the '<' before it.
_UNFINISHED_TAG: Final = re.compile(r"</?[A-Za-z0-9_.\-:]{0,128}+\Z")


def _key_text(quoted: str | None, other: str) -> str:
    """The key ``_KEY_BEFORE_REVERSED`` read (reversed): a double-quoted one with its JSON
    escapes read ("token\\t" is ``token`` and a tab), as the key rule judges keys."""
    if quoted is None:
        return other[::-1]
    key = quoted[::-1]
    if "\\" in key:
        try:
            key = orjson.loads(('"' + key + '"').encode("utf-8", "surrogatepass"))
        except orjson.JSONDecodeError:
            pass
    return key


#: A URL's user and the ':' before its password at the end of a text (no '@' yet): the
#: password, if any, starts there. Searched in the last ``_OPEN_WINDOW`` characters.
_URL_PASSWORD_OPEN: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]{0,30}+://[^\s/@:?#\"'<>]{0,256}+:(?=[^\s/@?#\"'<>]{0,512}+\Z)"
)
_OPEN_WINDOW: Final = 1024


def open_credential(text: str, is_credential: Callable[[str], bool] | None) -> int:
    """Where a credential starts that ``text`` ends inside, or -1: a known format's
    prefix on (``sk-``, ``ghp_``, ...), a URL's password (``scheme://user:pass``, its
    ``@`` not shown), a quoted value under a credential key (``"password": "hun``), an
    element's text under a credential tag (``<api_key>sk``).

    What a text cut short (at ``max_field_bytes``) shows of a credential, judged as the
    end of a token stream is (``StreamRedactor``): the format no longer matches whole.
    """
    start = _open_prefix(text)
    if start != -1:
        return start
    url = None
    for url in _URL_PASSWORD_OPEN.finditer(text, max(0, len(text) - _OPEN_WINDOW)):  # noqa: B007 - the last one
        pass
    if url is not None:
        return url.end()
    rules = StreamRedactor(str, is_credential)
    quote = rules._open_quote(text)  # noqa: SLF001 - this module's rule
    if quote == -1:
        quote = rules._open_element(text)  # noqa: SLF001 - this module's rule
    return quote + 1 if quote != -1 else -1


class StreamRedactor:
    """Redacts a run's streamed tokens as one text: each token is checked joined to the
    ``_TAIL`` characters streamed before it.

    What an earlier token already wrote cannot be taken back, so three rules keep a
    credential split across tokens out of the log: once the joined text ends in
    the start of a known credential format (``sk-``, ``ghp_``, ``eyJ``, ...), that
    text and the tokens continuing it are redacted until the run of credential
    characters ends; and a match of the full spec that reaches into the new token
    redacts the new token's part of it (a ``password=`` in one token and the value
    in the next); and (with ``is_credential``, the key rule) once the stream ends in a
    quoted value opened under a credential key (``"password": "hun``, as a tool call's
    streamed arguments are), the value is redacted up to its closing quote or the end of
    its line; and once the stream has shown a private key block's first line, every
    token is redacted whole up to the token that ends the block (a key is longer than
    the tail the full spec sees). Each token is also judged as the text it is (a
    ``.pgpass`` line alone in a token starts a line there, as in its chunk's copies).
    Left: a secret with no prefix (a bare AWS secret, a
    URL password) split across tokens has its earlier part written.
    """

    def __init__(
        self, redact: Callable[[str], str], is_credential: Callable[[str], bool] | None = None
    ) -> None:
        self._redact = redact
        self._is_credential = is_credential
        # Per run: the stream's tail, and whether a credential is open in it: False, True
        # (a known format's run of credential characters), the quote that will close
        # a quoted value under a credential key, or _IN_KEY_BLOCK.
        self._tails: dict[object, tuple[str, bool | str]] = {}

    def token(self, run: object, token: str) -> str:
        tail, open_ = self._tails.pop(run, ("", False))
        out = token
        if open_ == _IN_KEY_BLOCK:
            seen = tail[-16:] + token  # an end marker split across tokens
            out = REDACTED
            if any(end in seen for end in _KEY_BLOCK_ENDS):
                open_ = False
            self._remember(run, tail + token, open_)
            return out
        if open_:
            if open_ is True:
                continued = _CREDENTIAL_RUN.match(token)
                cut = continued.end() if continued is not None else 0
            elif open_ == _IN_ELEMENT and _UNFINISHED_TAG.search(tail) is not None:
                cut = 0  # the element's text ended at the tail's '<' (its closing tag unfinished)
            else:  # up to the closing quote (or the line's end: prose may never close it)
                # An element's text: to '<' or a blank line (a tag named in prose: "type <password>").
                line_end = token.find("\n") if open_ != _IN_ELEMENT else _blank_line(tail, token)
                ends = [i for i in (token.find(open_), line_end) if i != -1]
                cut = min(ends) if ends else len(token)
            if cut:
                out = REDACTED + token[cut:]
            open_ = open_ if cut == len(token) else False
        joined = tail + token
        redacted = self._redact(joined)
        if redacted != joined:
            out = _token_part(joined, redacted, len(tail), out)
        if tail:
            # The token as the text it is, too (as its chunk's copies are judged): what
            # only starts a line where the token starts (a ``.pgpass`` line) is one.
            alone = self._redact(token)
            if alone not in (token, out):
                out = alone if out == token else _both(token, alone, self._redact(out))
        if not open_:
            start = _open_prefix(joined)
            if start != -1:
                out = token[: start - len(tail)] + REDACTED if start >= len(tail) else REDACTED
                open_ = True
            else:
                quote = self._open_quote(joined)
                close = joined[quote] if quote != -1 else _IN_ELEMENT
                if quote == -1:
                    quote = self._open_element(joined)  # the '>' that opens the element's text
                if quote != -1:
                    start = quote + 1  # the value's first character
                    stop = _text_end(joined, start) if close == _IN_ELEMENT else len(joined)
                    if start < stop and stop > len(tail):  # part of the value is here already
                        out = (
                            (token[: start - len(tail)] if start >= len(tail) else "")
                            + REDACTED
                            + joined[stop:]
                        )
                    open_ = close
        if not open_ and self._in_key_block(joined):
            open_ = _IN_KEY_BLOCK
        self._remember(run, joined, open_)
        return out

    @staticmethod
    def _in_key_block(text: str) -> bool:
        """Whether ``text`` ends inside a private key block (its first line shown, no end).

        Read from the last ``PRIVATE KEY`` or PuTTY header on (a first line is at most
        ~100 characters before its ``PRIVATE KEY``): a long text full of blocks costs two
        ``rfind`` and a short search, not a match per block.
        """
        last = max(text.rfind("PRIVATE KEY"), text.rfind("PuTTY-User-Key-File-"))
        if last == -1:
            return False
        blocks = list(_KEY_BLOCK.finditer(text, max(0, last - 100)))
        return bool(blocks) and not any(end in text[blocks[-1].end() :] for end in _KEY_BLOCK_ENDS)

    def clean(self, streams: dict[object, list[str]], may_match: Callable[[str], bool]) -> set[object]:
        """Runs whose ``streams`` (tokens in order) need no redaction at all; their
        tails move past those tokens here (the caller writes them as they are, without
        a call per token).

        Checked on each run's tail joined to its tokens, so that nothing split across
        tokens is missed. A run that is still inside an open credential run, or whose
        text ends in a credential prefix, is never clean.
        """
        out = set()
        for run, tokens in streams.items():
            tail, open_ = self._tails.get(run, ("", False))
            joined = tail + "".join(tokens)
            if (
                not open_
                # each token also as the text it is (as ``token`` judges it): its start a line's
                and not may_match(joined + "\n" + "\n".join(tokens) if tail or len(tokens) > 1 else joined)
                and _open_prefix(joined) == -1
                and self._open_quote(joined) == -1
                and self._open_element(joined) == -1
            ):
                out.add(run)
                self._remember(run, joined, False)
        return out

    def _remember(self, run: object, joined: str, open_: bool | str) -> None:
        """The run's stream now ends with ``joined`` (its tail kept), ``open_`` as in
        ``_tails``; at most 10,000 runs (runs that never end: the oldest is forgotten)."""
        tails = self._tails
        tails.pop(run, None)  # re-inserted last: the oldest run is the first
        if len(tails) >= 10_000:
            tails.pop(next(iter(tails)))
        tails[run] = (joined[-_TAIL:], open_)

    def _open_quote(self, text: str) -> int:
        """Where the quote opening a value under a credential key is, if ``text`` ends
        inside that value (its last quote, on its last line), else -1. A value opened
        and closed within ``text`` is the full spec's to find (``may_match``)."""
        if self._is_credential is None:
            return -1
        for mark in _QUOTE_MARKS:  # a '"' value may hold a "'", and the other way round
            quote = text.rfind(mark)
            if quote > 0 and "\n" not in text[quote:]:
                key = _KEY_BEFORE_REVERSED.match(text[max(0, quote - _KEY_WINDOW) : quote][::-1])
                # A quoted key whole, whatever it holds ("password ", "API key for prod").
                if key is not None and self._is_credential(_key_text(key[1], key[2] or key[3])):
                    return quote
        return -1

    def _open_element(self, text: str) -> int:
        """Where the '>' opening the text of an XML-style element under a credential tag
        (``<db_password>``) is, if ``text`` ends inside that text (no '<' and no blank line
        after it) or in an unfinished tag right after it (``<api_key>SECRET</api_k``), else -1.
        An element opened and closed within ``text`` is the full spec's to find."""
        if self._is_credential is None:
            return -1
        last = text.rfind("<")
        if last > 0 and _UNFINISHED_TAG.match(text, last) is not None:
            last = text.rfind("<", 0, last)  # the text may end in the element's closing tag
        if last == -1 or (last and (text[last - 1].isalnum() or text[last - 1] == "_")):
            return -1  # none, or code: Promise<AccessToken>
        tag = _OPEN_ELEMENT.match(text, last)
        if tag is None or not self._is_credential(tag[1]) or text.find("\n\n", tag.end()) != -1:
            return -1  # not a credential's, or ended by a blank line (a tag named in prose)
        return tag.end() - 1

    def end(self, run: object) -> None:
        self._tails.pop(run, None)


def _blank_line(tail: str, token: str) -> int:
    """Where in ``token`` a blank line starts (its first '\n' possibly the tail's last
    character: then at 0), or -1."""
    blank = (tail[-1:] + token).find("\n\n")
    return -1 if blank == -1 else max(0, blank - len(tail[-1:]))


def _text_end(text: str, start: int) -> int:
    """Where the text of an element opened at ``start`` ends in ``text``: at an unfinished
    tag at the end (``</api_k``: its closing tag, not whole yet), else at the end."""
    unfinished = _UNFINISHED_TAG.search(text, start)
    return unfinished.start() if unfinished is not None else len(text)


def _both(token: str, alone: str, out: str) -> str:
    """The token redacted joined to its tail, ``out`` (then alone again), where alone it
    became ``alone``: ``out`` if it no longer holds what the token alone hid, else all
    of it redacted (rare: two different findings in one token)."""
    prefix = _common_prefix(token, alone)
    suffix = min(_common_prefix(token[::-1], alone[::-1]), min(len(token), len(alone)) - prefix)
    return REDACTED if token[prefix : len(token) - suffix] in out else out


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b`` (binary search on C comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _token_part(joined: str, redacted: str, start: int, current: str) -> str:
    """The new token's text after ``joined`` became ``redacted`` (its first ``start``
    characters were written before)."""
    prefix = _common_prefix(joined, redacted)
    limit = min(len(joined), len(redacted)) - prefix
    suffix = min(_common_prefix(joined[::-1], redacted[::-1]), limit)
    if len(joined) - suffix <= start:
        return current  # the change lies wholly in text written before
    if prefix >= start:
        return redacted[start:]
    return REDACTED + (redacted[len(redacted) - suffix :] if suffix else "")
