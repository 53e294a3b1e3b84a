"""`parse_head` (the header pre-fetch pass's parser) must agree with `parse_message` on every
header block of every corpus we have: generated mail, the CPython email test messages, the
malformed set and the eml fixtures, as the whole block and as the few fields the sync fetches
before any body (`BODY.PEEK[HEADER.FIELDS (...)]`, a blank line after them)."""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path

import pytest

from devtools.samples import generate_mailbox, malformed_cases
from sync.imap import META_HEADER_FIELDS
from sync.parse import parse_head, parse_message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "eml"
CPYTHON = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
_BLANK = re.compile(rb"\r?\n\r?\n")
_WANTED = {name.lower().encode() for name in META_HEADER_FIELDS.split()}


def _corpus() -> dict[str, bytes]:
    raws = {f"generated-{i}": s.raw for i, s in enumerate(generate_mailbox(300, seed=5))}
    raws |= {f"malformed-{name}": raw for name, raw in malformed_cases().items()}
    raws |= {f"fixture-{p.name}": p.read_bytes() for p in sorted(FIXTURES.glob("*.eml"))}
    if CPYTHON.is_dir():
        raws |= {f"cpython-{p.name}": p.read_bytes() for p in sorted(CPYTHON.glob("msg_*.txt"))}
    return raws


def _header_block(raw: bytes) -> bytes:
    blank = _BLANK.search(raw)
    return raw[: blank.end()] if blank else raw


def _meta_fields(raw: bytes) -> bytes:
    """What a server returns for HEADER.FIELDS: the wanted lines (with their continuations)."""
    kept: list[bytes] = []
    keep = False
    for line in _header_block(raw).splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().lower() in _WANTED
        if keep:
            kept.append(line)
    return b"".join(kept) + b"\r\n"


CORPUS = _corpus()


def test_corpus_is_broad() -> None:
    assert sum(name.startswith("cpython-") for name in CORPUS) >= 40 or not CPYTHON.is_dir()
    assert sum(name.startswith("malformed-") for name in CORPUS) >= 10


@pytest.mark.parametrize("cut", [_header_block, _meta_fields, lambda raw: raw])
def test_parse_head_equals_parse_message(cut: object) -> None:
    differ = []
    for name, raw in CORPUS.items():
        block = cut(raw)  # type: ignore[operator]
        if parse_head(block) != parse_message(block):
            differ.append(name)
    assert differ == []


def test_parse_head_never_raises() -> None:
    for junk in (b"", b"\r\n", b" continuation first\r\nFrom: a@b.test\r\n\r\n", b"\xff" * 100):
        assert parse_head(junk) == parse_message(junk)


def _near_the_caps() -> dict[str, bytes]:
    """Mail on either side of each cap the quick path must prove out of reach."""
    head = b"From: a@globex.test\r\nTo: b@acme.test\r\nSubject: caps\r\nMessage-ID: <caps@globex.test>\r\n"

    def multipart(parts: int) -> bytes:
        body = b"".join(b"--B\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(parts))
        return head + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n' + body + b"--B--\r\n"

    def nested(depth: int) -> bytes:
        opens = b"".join(
            b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(depth)
        )
        closes = b"".join(b"--n%d--\r\n" % i for i in reversed(range(depth)))
        return head + opens + b"Content-Type: text/plain\r\n\r\nbottom\r\n" + closes

    return {
        "parts-200": multipart(200),
        "parts-499": multipart(499),
        "parts-501": multipart(501),
        "depth-9": nested(9),
        "depth-19": nested(19),
        "depth-21": nested(21),
        "from-line-ends-header": head + b"From someone else\r\n\r\nbody\r\n",
        "from-line-first": b"From sender@globex.test Mon Jan  8 09:00:00 2024\r\n" + head + b"\r\nbody\r\n",
        "long-boundary": head
        + b'Content-Type: multipart/mixed; boundary="'
        + b"x" * 300
        + b'"\r\n\r\n--'
        + b"x" * 300
        + b"\r\n\r\nhi\r\n--"
        + b"x" * 300
        + b"--\r\n",
        "many-dash-lines": head + b"\r\n" + b"-- not a delimiter\r\n" * 3000,
        "digest": head
        + b'Content-Type: multipart/digest; boundary="D"\r\n\r\n'
        + b"--D\r\n\r\nFrom: x@y.test\r\n\r\nhi\r\n--D--\r\n",
        "upper-case-type": head
        + b'Content-Type: MULTIPART/Mixed; boundary="U"\r\n\r\n--U\r\n\r\nhi\r\n--U--\r\n',
        "attached-message": head
        + b"Content-Type: message/rfc822\r\n\r\n"
        + b"From: inner@globex.test\r\nSubject: inner\r\n\r\ninner body\r\n",
    }


def test_the_quick_bounding_path_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping the pre-scan (when counting proves no cap can be reached) gives the same result
    as the scan, on every corpus and on mail just inside and just outside each cap."""
    from sync.parse import bounds

    cases = CORPUS | _near_the_caps()
    quick = {name: parse_message(raw) for name, raw in cases.items()}
    monkeypatch.setattr(bounds, "_QUICK", False)
    scanned = {name: parse_message(raw) for name, raw in cases.items()}
    assert [name for name in cases if quick[name] != scanned[name]] == []
    # ... and the quick path is the common one.
    monkeypatch.setattr(bounds, "_QUICK", True)
    generated = [raw for name, raw in CORPUS.items() if name.startswith("generated-")]
    taken = sum(bounds._Bounder(raw, bounds.DEFAULT_LIMITS)._within_limits() for raw in generated)
    assert taken >= 0.9 * len(generated)
    assert not bounds._Bounder(cases["parts-501"], bounds.DEFAULT_LIMITS)._within_limits()
    assert not bounds._Bounder(cases["depth-21"], bounds.DEFAULT_LIMITS)._within_limits()


# --------------------------------------------------------------------------------------------
# The lean reading of plain header blocks (`_plain_header_fields`): the same fields as the
# stdlib's header parser, so the same values and decisions (recipient count, Message-ID,
# sender, subject, date, content hash) downstream.


def _stdlib_fields(block: bytes) -> list[tuple[str, str]]:
    from sync.parse.bounds import _read_headers

    headers, _rest = _read_headers(block)
    return [(str(name).strip().lower(), value) for name, value in headers.raw_items()]


def _lean_shapes() -> dict[str, bytes]:
    """Header blocks at each edge of what the lean reading accepts."""
    head = b"From: Hank <hank@globex.test>\r\nTo: sales@acme.test\r\n"
    return {
        "plain": head + b"\r\n",
        "lf-only": head.replace(b"\r\n", b"\n") + b"\n",
        "mixed-line-ends": b"From: a@globex.test\nTo: b@acme.test\r\n\n",
        "lone-cr": b"From: a@globex.test\rTo: b@acme.test\r\n\r\n",
        "lone-cr-in-value": b"Subject: one\rtwo\r\nTo: b@acme.test\r\n\r\n",
        "folded": b"To: a@acme.test,\r\n\tb@acme.test,\r\n  c@acme.test\r\nSubject: x\r\n\r\n",
        "blank-continuation": b"Subject: x\r\n \r\nTo: b@acme.test\r\n\r\n",
        "empty-value": b"Subject:\r\nTo: b@acme.test\r\n\r\n",
        "blank-value-then-folded": b"Subject:   \t\r\n folded\r\nTo: b@acme.test\r\n\r\n",
        "no-space-after-colon": b"Subject:x\r\nTo:b@acme.test\r\n\r\n",
        "tab-after-colon": b"Subject:\tx \t\r\n\r\n",
        "space-before-colon": b"Subject : x\r\n\r\n",
        "colon-first": b": no name\r\n" + head + b"\r\n",
        "continuation-first": b" folded\r\n" + head + b"\r\n",
        "from-line-first": b"From hank@globex.test Mon Jan  8 09:00:00 2024\r\n" + head + b"\r\n",
        "from-line-last": head + b"From someone\r\n\r\n",
        "8bit-value": b"Subject: caf\xc3\xa9 \xff\r\nFrom: J\xc3\xbcrgen <j@globex.test>\r\n\r\n",
        "8bit-name": b"Subj\xc3\xa9ct: x\r\n" + head + b"\r\n",
        "nul-in-value": b"Subject: a\x00b\r\n\r\n",
        "control-in-name": b"Sub\x01ject: a\r\n\r\n",
        "vertical-tab": b"Subject: a\x0bb\x0cc\x1cd\r\n\r\n",
        "unicode-separators-as-bytes": b"Subject: a\xe2\x80\xa8b\xc2\x85c\r\n\r\n",
        "odd-name-characters": b"X-!#$%&'*+-.^_`{|}~9: v\r\n\r\n",
        "no-blank-line": head,
        "only-a-blank-line": b"\r\n",
        "two-blank-lines": head + b"\r\n\r\n",
        "body-after": head + b"\r\nbody\r\n",
        "content-type": head + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n',
        "content-type-text": head + b"Content-Type: text/plain\r\n\r\n",
        "repeated-fields": head + b"To: second@acme.test\r\nCc: a@x.test\r\nCc: b@x.test\r\n\r\n",
        "encoded-words": b"Subject: =?utf-8?q?caf=C3=A9?= =?iso-8859-1?b?4Q==?=\r\n\r\n",
        "date-and-id": b"Date: Mon, 8 Jan 2024 09:00 +0100\r\nMessage-ID: <a@b>\r\n\r\n",
    }


def _lean_corpus() -> dict[str, bytes]:
    from tests.sync.test_parse_fast import _mutations

    blocks = {f"{name}-meta": _meta_fields(raw) for name, raw in CORPUS.items()}
    blocks |= {f"{name}-block": _header_block(raw) for name, raw in CORPUS.items()}
    blocks |= _lean_shapes()
    mutated = {k: v for k, v in blocks.items() if not k.startswith("generated-") or k < "generated-6"}
    return blocks | dict(_mutations(mutated, per_message=6, seed=21))


def test_lean_reading_gives_the_stdlib_fields_and_the_same_message() -> None:
    from sync.parse import DEFAULT_LIMITS
    from sync.parse.bounds import _plain_header_fields

    wrong_fields, wrong_message, lean = [], [], 0
    for name, block in _lean_corpus().items():
        fields = _plain_header_fields(block, DEFAULT_LIMITS)
        if fields is not None:
            lean += 1
            if fields != _stdlib_fields(block):
                wrong_fields.append(name)
        if parse_head(block) != parse_message(block):
            wrong_message.append(name)
    assert (wrong_fields, wrong_message) == ([], [])
    assert lean > 600  # the comparison is not empty: generated, CPython and mutated blocks


def test_lean_reading_takes_the_usual_pre_fetch_answer_and_nothing_else() -> None:
    from sync.parse import DEFAULT_LIMITS, ParseLimits
    from sync.parse.bounds import _plain_header_fields

    generated = [_meta_fields(raw) for name, raw in CORPUS.items() if name.startswith("generated-")]
    assert all(_plain_header_fields(block, DEFAULT_LIMITS) is not None for block in generated)
    shapes = _lean_shapes()
    refused = {name for name, block in shapes.items() if _plain_header_fields(block, DEFAULT_LIMITS) is None}
    assert refused == {
        "lone-cr",
        "lone-cr-in-value",
        "colon-first",
        "continuation-first",
        "from-line-first",
        "from-line-last",
        "8bit-name",
        "control-in-name",
        "space-before-colon",
        "no-blank-line",
        "only-a-blank-line",
        "two-blank-lines",
        "body-after",
        "content-type",
        "content-type-text",
    }
    # Over the header budget: the full path, which truncates and says so.
    small = ParseLimits(max_header_bytes=40)
    block = shapes["repeated-fields"]
    assert _plain_header_fields(block, small) is None
    assert parse_head(block, limits=small) == parse_message(block, limits=small)
    assert parse_head(block, limits=small).parse_errors
