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
