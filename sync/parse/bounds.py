"""Bounding the input before the stdlib parser sees it: the caps (`ParseLimits`), the
pre-scan that cuts hostile structure (`_Bounder`), and the feed into `email.feedparser`.

See the package docstring (`sync.parse`) for why the input is bounded first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.feedparser import BytesFeedParser
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import Compat32
from typing import Any, TypeVar

from sync.parse.charsets import _raw_bytes


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Caps that keep one hostile message from eating the sync worker's time or memory.

    `max_header_bytes` bounds the top-level header block and, separately, the total size of all
    MIME part headers (including the headers of attached messages) taken together.
    """

    max_mime_depth: int = 20
    max_parts: int = 500
    max_header_bytes: int = 256 * 1024
    max_body_chars: int = 2_000_000


DEFAULT_LIMITS = ParseLimits()

_MAX_ERRORS = 20  # a message with 10,000 broken parts needs one flag, not 10,000 strings
_MAX_BOUNDARY = 200  # RFC 2046 allows 70; a longer one that never occurs counts as unusable
_MAX_PARAMS = 64  # parameters per Content-Type / Content-Disposition handed to get_param
# Feedparser work per message, in units of ~0.1 us (see _Bounder._spend): ~0.6 s at most.
_LINE_BUDGET = 6_000_000
_LINE_WEIGHT = 6  # per line, plus one per open multipart
_NESTED_WEIGHT = 4  # per line inside any multipart
_SCAN_WINDOW = 64 * 1024
# The quick path (`_Bounder._within_limits`): on for every message small enough to count fast.
_QUICK = True
_QUICK_MAX_BYTES = 256 * 1024
_FEED_CHUNK = 64 * 1024


class _Errors:
    """Deduplicated, capped list of parse problems."""

    __slots__ = ("_items", "_overflow")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._overflow = False

    def add(self, message: str) -> None:
        if message in self._items:
            return
        if len(self._items) >= _MAX_ERRORS:
            self._overflow = True
            return
        self._items.append(message)

    def result(self) -> tuple[str, ...]:
        if self._overflow:
            return (*self._items, "further parse errors omitted")
        return tuple(self._items)


_T = TypeVar("_T")
_D = TypeVar("_D")


def _safely(get: Callable[[], _T], default: _D) -> _T | _D:
    """A stdlib accessor that raises on some broken input (RFC 2231 parameters mixing numbered
    and unnumbered sections, a body-less part declaring base64, 8-bit charset names)."""
    try:
        return get()
    except Exception:
        return default


class _Policy(Compat32):
    """compat32, except that header values are handed out raw (never as `Header` objects) and
    parameter headers are cut at `_MAX_PARAMS` parameters, since `get_param` (which the
    feedparser calls for every multipart) rescans the value for every ";" inside quotes.
    When re-emitting an attached message to measure it, headers are written as they came."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        if name.lower() in ("content-type", "content-disposition") and value.count(";") > _MAX_PARAMS:
            value = ";".join(value.split(";", _MAX_PARAMS + 1)[: _MAX_PARAMS + 1])
        return value

    def fold_binary(self, name: str, value: str) -> bytes:
        return _raw_bytes(f"{name}: {value}{self.linesep}")


_POLICY = _Policy()


class _TooManyParts(Exception):
    pass


_EOL = re.compile(rb"\r\n|\r|\n")
# The feedparser cracks lines with StringIO(newline="").readlines(): "\r\n", "\r" and "\n" end them.
_AT_LINE_START = rb"(?<![^\n\r])(?!(?<=\r)\n)"  # (not inside a CRLF)
# Where a header block ends: the first line that email.feedparser.headerRE does not accept.
_NOT_A_HEADER_LINE = re.compile(_AT_LINE_START + rb"(?!From |[\x21-\x39\x3b-\x7e]*:|[\t ])")


def _after_blank_line(buf: bytes, start: int) -> int:
    """End of the first empty line from the line start `start` on (or the end of `buf`)."""
    start = max(0, start - 1)
    ends = [i + n for i, n in ((buf.find(b"\n\n", start), 2), (buf.find(b"\n\r\n", start), 3)) if i >= 0]
    return min(ends, default=len(buf))


def _count_lines(buf: bytes, start: int, end: int) -> int:
    return buf.count(b"\n", start, end) + buf.count(b"\r", start, end) - buf.count(b"\r\n", start, end) + 1


_DASH_LINE = re.compile(rb"--(?<![^\n\r]--)")  # a line starting with "--"
_MAX_REJECTED = 1000  # "--" that were no delimiter line, checked in Python before compiling
# What may follow the boundary on a delimiter line (the feedparser's `boundaryre`, after "--B").
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)")


@functools.lru_cache(maxsize=64)
def _delimiter_lines(boundaries: frozenset[bytes]) -> re.Pattern[bytes]:
    """Only the delimiter lines of `boundaries`, at C speed: for mail full of "--" lines."""
    alternatives = b"|".join(re.escape(b) for b in sorted(boundaries))
    return re.compile(_DASH_LINE.pattern + rb"(?:" + alternatives + rb")" + _DELIMITER_TAIL.pattern)


@dataclass(frozen=True, slots=True)
class _Delimiter:
    start: int
    end: int  # after the line end
    closing: bool
    level: int  # index into the open levels


def _read_headers(block: bytes, default_type: str = "text/plain") -> tuple[Message, int]:
    """A header block read by the stdlib: (headers, length of what it left as body)."""
    headers = BytesHeaderParser(policy=_POLICY).parsebytes(block)
    headers.set_default_type(default_type)
    rest = _safely(lambda: headers.get_payload(), "")  # only a final "From ..." line is ever left over
    return headers, len(rest) if isinstance(rest, str) and rest.isascii() else 0


# A header block as the header pre-fetch returns it: "Name: value" lines (with continuation lines)
# and the blank line that ends them, nothing else. Names as the feedparser's `headerRE` accepts
# them, minus the cases it treats specially (an empty name, a "From " line); no lone CR (it
# ends a line for the feedparser); any other character, 8-bit included, is value text.
_PLAIN_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)\r?\n")
_PLAIN_BLOCK = re.compile(r"(?:[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)+\r?\n")


def _plain_header_fields(raw: bytes, limits: ParseLimits) -> list[tuple[str, str]] | None:
    """(lower-cased name, raw value) of each field of a plain header block, exactly as the
    stdlib's compat32 header parser and `_Bounder` read it (`feedparser._parse_headers` and
    `Compat32.header_source_parse`: the value after the colon with leading blanks removed, its
    continuation lines joined with their line ends, the final line end dropped); None for
    anything else (a body, a Content-Type, a block over the header budget, a damaged line),
    which then takes the full path."""
    if len(raw) > limits.max_header_bytes:
        return None
    text = raw.decode("ascii", "surrogateescape")  # as BytesParser reads bytes
    if _PLAIN_BLOCK.fullmatch(text) is None:
        return None
    fields = [(name.lower(), value) for name, value in _PLAIN_FIELD.findall(text)]
    # A Content-Type could make the block a container or an (empty) attachment to walk.
    if any(name == "content-type" for name, _ in fields):
        return None
    return fields


@dataclass(slots=True)
class _Level:
    """An open container: a multipart (with its boundary) or an attached message (None)."""

    boundary: bytes | None
    digest: bool = False


class _Bounder:
    """Pre-scan of the raw bytes that bounds what the feedparser will see (see module docstring).

    It mirrors the feedparser: a delimiter line of any open multipart ends the current part
    (and all parts nested in the multipart it belongs to), delimiter lines right after one are
    swallowed, a header block ends at the first line that is not a header, and part headers
    are read by the stdlib itself. The scan moves forward in windows, so each byte is searched
    about once.
    """

    def __init__(self, raw: bytes, limits: ParseLimits) -> None:
        self.raw = raw
        self.limits = limits
        self.stack: list[_Level] = []
        self.edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement), in order
        self.errors: list[str] = []
        self.header_error: str | None = None
        self.body_start = 0  # of the top-level message, in `raw`
        self.parts = 1
        self.header_budget = max(0, limits.max_header_bytes)
        self.line_budget = _LINE_BUDGET
        self.rejected = 0  # lines starting with "--" that were no delimiter
        self.top_headers: Message | None = None  # the top-level header block, as the stdlib read it
        self.quick = False  # the scan was skipped: no cap can be reached, the bytes are as they came

    def run(self, *, quick: bool = True) -> bytes:
        """The bounded bytes. `quick`: skip the scan when counting at C speed proves no cap can
        be reached (the common case: a scan would change nothing), leaving `top_headers` unset
        and the header block to the feedparser alone instead of reading it twice."""
        if quick and _QUICK and self._within_limits():  # sets body_start on the way
            self.quick = True
            return self.raw
        resume = self._top()
        if resume is not None:
            self._scan(resume)
        if not self.edits:
            return self.raw
        pieces, pos = [], 0
        for start, end, replacement in self.edits:
            pieces += [self.raw[pos:start], replacement]
            pos = end
        pieces.append(self.raw[pos:])
        return b"".join(pieces)

    def _within_limits(self) -> bool:
        """Upper bounds of everything the scan would count, from the raw bytes: when none can
        reach its cap, the scan would make no edit and report no error. Each bound errs high:
        a literal "multipart/" or "message/" for every container the parser could open (their
        content types are read from the raw header text), every line starting with "--" for a
        part, the whole message for the header budgets, twice the most lines could cost."""
        raw, limits = self.raw, self.limits
        size = len(raw)
        if size > limits.max_header_bytes or size > _QUICK_MAX_BYTES:
            return False
        lowered = raw.lower()
        if b"digest" in lowered:  # parts of a multipart/digest are messages without saying so
            return False
        multiparts = lowered.count(b"multipart/")
        containers = multiparts + lowered.count(b"message/")
        if containers >= limits.max_mime_depth:
            return False
        dashes = raw.count(b"\n--") + raw.count(b"\r--") + 1
        parts = 1 + 2 * dashes + containers
        if parts > limits.max_parts:
            return False
        lines = _count_lines(raw, 0, size) + 2 * parts + size // _SCAN_WINDOW + 4
        cost = lines * (_LINE_WEIGHT + _NESTED_WEIGHT + multiparts) + dashes * 2 * (multiparts + size // 64)
        if 2 * cost > _LINE_BUDGET:
            return False
        # A "From " line ending the top header block is left to the body by the header parser
        # (see _read_headers): only the scan's reading of the block gets that right.
        block = self.body_start = self._header_block(0, size) or 0
        return raw.find(b"\nFrom ", 0, block) < 0 and raw.find(b"\rFrom ", 0, block) < 0

    def _top(self) -> int | None:
        raw, limit = self.raw, max(0, self.limits.max_header_bytes)
        block = self._header_block(0, limit)
        if block is not None:
            kept = self.body_start = block
        else:  # keep the fields that fit, then go on after the blank line that ends the block
            kept = raw.rfind(b"\n", 0, limit) + 1
            self.body_start = _after_blank_line(raw, kept)
            self.header_error = f"header block larger than {limit} bytes; truncated"
            eol = b"\r\n" if raw[kept - 2 : kept] == b"\r\n" else b"\n"
            self.edits.append((kept, self.body_start, eol))
        headers, rest = _read_headers(raw[:kept])
        self.top_headers = headers
        if block is not None:
            self.body_start -= rest  # never expected: the parser ended the headers earlier
        if not self._spend(0, kept):
            return None
        return self._open(headers, self.body_start, self.body_start)

    def _header_block(self, start: int, budget: int) -> int | None:
        """Where the body of the header block at `start` begins; None when the block is longer
        than `budget` bytes. Like the feedparser, a blank line, a non-header line or a delimiter
        line of an open multipart ends the block; only a blank line is skipped."""
        raw = self.raw
        limit = min(len(raw), start + budget)
        end = _NOT_A_HEADER_LINE.search(raw, start, limit)
        if end is None or (end.start() == limit and not _NOT_A_HEADER_LINE.match(raw, limit)):
            if limit < len(raw):
                return None
            block_end = len(raw)
        else:
            block_end = end.start()
        delimiter = self._find(start, block_end)
        if delimiter is not None:
            return delimiter.start
        blank = _EOL.match(raw, block_end)
        return blank.end() if blank else block_end

    def _find(self, pos: int, end: int, *, at: bool = False) -> _Delimiter | None:
        """The next delimiter line of an open multipart in raw[pos:end] (only at `pos` if `at`).

        The line belongs to the outermost multipart whose boundary it matches: the innermost
        one's matcher ends the current part, but each multipart then re-reads the line with
        only its ancestors' matchers active, so it travels up to the outermost match.

        "--" is found at C speed and checked here; after `_MAX_REJECTED` hits that were no
        delimiter line, a compiled pattern for the open boundaries takes over.
        """
        order = [i for i, level in enumerate(self.stack) if level.boundary is not None]
        raw = self.raw
        while order:
            if self.rejected < _MAX_REJECTED:
                start = raw.find(b"--", pos, end)
                if start < 0 or (at and start != pos):
                    return None
                if start > 0 and raw[start - 1] not in b"\r\n":
                    self.rejected += 1
                    pos = start + 1
                    continue
            else:
                pattern = _delimiter_lines(frozenset(self.stack[i].boundary or b"" for i in order))
                found = pattern.match(raw, pos, end) if at else pattern.search(raw, pos, end)
                if found is None:
                    return None
                start = found.start()
            for index in order:  # who gets the line
                boundary = self.stack[index].boundary or b""
                tail_start = start + 2 + len(boundary)
                if tail_start <= end and raw.startswith(boundary, start + 2):
                    tail = _DELIMITER_TAIL.match(raw, tail_start, end)
                    if tail is not None:
                        return _Delimiter(start, tail.end(), tail.group(1) is not None, index)
            if at:
                return None
            self.rejected += 1
            pos = start + 2
        return None

    def _scan(self, pos: int) -> None:
        raw = self.raw
        while True:
            newline = raw.find(b"\n", pos + _SCAN_WINDOW)
            window = len(raw) if newline < 0 else newline + 1
            found = self._find(pos, window)
            if not self._spend(pos, found.start if found else window):
                return
            if found is None:
                if window >= len(raw):
                    return
                pos = window
                continue
            del self.stack[found.level + 1 :]
            level = self.stack[found.level]
            if found.closing:  # what follows is the parent's text
                self.stack.pop()
                pos = found.end
                continue
            start = found.end
            while (again := self._find(start, len(raw), at=True)) and again.level == found.level:
                start = again.end  # the parser swallows repeated delimiter lines
            default_type = "message/rfc822" if level.digest else "text/plain"
            resume = self._part(start, found.start, default_type)
            if resume is None:
                return
            pos = resume

    def _part(self, start: int, cut_at: int, default_type: str) -> int | None:
        """The header block of a new part at `start`; returns where scanning resumes."""
        self.parts += 1
        if self.parts > self.limits.max_parts:
            self._truncate(cut_at, f"more than {self.limits.max_parts} MIME parts; the rest was ignored")
            return None
        body_start = self._header_block(start, self.header_budget)
        if body_start is None:
            message = "MIME part headers exceed the header size limit; the rest was ignored"
            self._truncate(cut_at, message)
            return None
        headers, rest = _read_headers(self.raw[start:body_start], default_type)
        body_start -= rest
        self.header_budget -= body_start - start
        if not self._spend(start, body_start):
            return None
        return self._open(headers, body_start, cut_at)

    def _open(self, headers: Message, body_start: int, cut_at: int) -> int | None:
        """Enter the container a header block declares, if any, as the feedparser will."""
        content_type = headers.get_content_type()
        if content_type.startswith("multipart/"):
            boundary = _safely(headers.get_boundary, None)  # the parser fails where this does
            try:
                level = _Level(boundary.encode("ascii", "surrogateescape"))  # type: ignore[union-attr]
            except (AttributeError, UnicodeError):  # no boundary, or one that can never match
                return body_start
            level.digest = content_type == "multipart/digest"
        elif content_type.startswith("message/") and content_type != "message/delivery-status":
            level = _Level(None)
        else:
            return body_start
        if len(self.stack) >= self.limits.max_mime_depth:
            self.errors.append(
                f"MIME nesting deeper than {self.limits.max_mime_depth} levels; inner parts ignored"
            )
            found = self._find(body_start, len(self.raw))
            resume = found.start if found else len(self.raw)
            if resume > body_start:
                self.edits.append((body_start, resume, b""))
            return resume
        self.stack.append(level)
        if level.boundary is None:  # an attached message: its header block follows at once
            return self._part(body_start, cut_at, "text/plain")
        return body_start

    def _spend(self, start: int, end: int) -> bool:
        """Charge the parser's work on raw[start:end] (at most a scan window or a header block)
        to the line budget, or truncate at `start`. A line costs more inside multiparts, since
        the feedparser tests it against every open boundary, and a line starting with "--" more
        again: the boundaries are compared further, by the parser and by this scan."""
        raw = self.raw
        boundaries = [level.boundary for level in self.stack if level.boundary is not None]
        cost = _count_lines(raw, start, end) * (
            _LINE_WEIGHT + (_NESTED_WEIGHT if boundaries else 0) + len(boundaries)
        )
        if boundaries:
            dashes = raw.count(b"\n--", start, end) + raw.count(b"\r--", start, end)
            cost += dashes * 2 * (len(boundaries) + sum(map(len, boundaries)) // 64)
        if end > start and cost > self.line_budget:
            self._truncate(
                start, "message too long or too deeply nested to parse in full; the rest was ignored"
            )
            return False
        self.line_budget -= cost
        return True

    def _truncate(self, at: int, message: str) -> None:
        """Drop raw[at:] and close the open multiparts, so the parser sees no damage of ours."""
        self.errors.append(message)
        self.edits = [edit for edit in self.edits if edit[0] < at]
        tail = b"".join(b"--" + lvl.boundary + b"--\r\n" for lvl in reversed(self.stack) if lvl.boundary)
        if tail and at > 0 and self.raw[at - 1 : at] not in (b"\n", b"\r"):
            tail = b"\r\n" + tail
        self.edits.append((at, len(self.raw), tail))
        self.stack.clear()


def _feed(data: bytes, limits: ParseLimits) -> tuple[Message, str | None]:
    """The stdlib's parse of the bounded bytes: (root message, error that stopped it early).

    Its message factory counts parts as a backstop: the pre-scan cuts at the same count, but
    does not count the blocks of message/delivery-status parts."""
    made: list[Message] = []

    def factory(policy: Any) -> Message:
        if len(made) >= max(1, limits.max_parts):
            raise _TooManyParts
        made.append(Message(policy=policy))
        return made[-1]

    parser = BytesFeedParser(policy=_POLICY.clone(message_factory=factory))
    try:
        for start in range(0, len(data), _FEED_CHUNK):
            parser.feed(data[start : start + _FEED_CHUNK])
        return parser.close(), None
    except _TooManyParts:
        error = f"more than {limits.max_parts} MIME parts; the rest was ignored"
    except Exception as exc:  # defensive: keep whatever was parsed before the failure
        error = f"MIME structure could not be parsed ({type(exc).__name__})"
    if not made:
        raise ValueError("no message was parsed")
    return made[0], error
