"""`sync.fetch_response.read_quick` must read FETCH responses exactly as imapclient's parser does
whenever it reads them at all, take the usual answers to our commands, and leave everything else
to imapclient (None): compared over generated responses of every item order and value, over
shapes it must refuse, and over a real Dovecot's answers through `ImapSession`."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pytest
from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_fetch_response
from pydantic import SecretStr

from core.types import Security
from devtools.samples import generate_mailbox
from sync import imap
from sync.fetch_response import read_quick
from tests.dovecot_fixtures import MailboxUser

FIELDS = b"BODY[HEADER.FIELDS (MESSAGE-ID FROM TO CC BCC DATE SUBJECT)]"
FLAGS = [
    b"\\Seen",
    b"\\Answered",
    b"\\Flagged",
    b"\\Recent",
    b"\\Deleted",
    b"$Forwarded",
    b"NonJunk",
    b"$label1",
]
DATES = [
    b"08-Jan-2024 09:00:00 +0100",
    b" 8-Jan-2024 09:00:00 -0530",
    b"31-Dec-1999 23:59:59 +0000",
    b"31-Feb-2024 09:00:00 +0000",  # no such day: None
    b"not a date",
    b"",
]


def _date(value: bytes) -> datetime | None:
    try:
        return parse_to_datetime(value, normalise=False)
    except ValueError:
        return None


def _imapclient(lines: list[Any]) -> dict[int, dict[bytes, Any]]:
    return dict(parse_fetch_response(lines, normalise_times=False, uid_is_key=True))


def _response(rng: random.Random, seq: int, uid: int, *, literal: bytes | None, key: bytes) -> list[Any]:
    items = [b"UID %d" % uid, b"RFC822.SIZE %d" % rng.randrange(0, 10**7)]
    if rng.random() < 0.8:
        items.append(b'INTERNALDATE "' + rng.choice(DATES) + b'"')
    if rng.random() < 0.8:
        items.append(b"FLAGS (" + b" ".join(rng.sample(FLAGS, rng.randrange(0, 4))) + b")")
    rng.shuffle(items)
    head = b"%d (" % seq + b" ".join(items)
    if literal is None:
        return [head + b")"]
    return [(head + b" " + key + b" {%d}" % len(literal), literal), b")"]


def _generated(count: int, seed: int) -> list[list[Any]]:
    rng = random.Random(seed)
    raws = [s.raw for s in generate_mailbox(40, seed=seed)]
    out = []
    for n in range(count):
        key = rng.choice([FIELDS, b"BODY[]", b"BODY[HEADER]"])
        lines: list[Any] = []
        for i in range(rng.randrange(1, 6)):
            literal = None if rng.random() < 0.2 else rng.choice(raws)[: rng.randrange(0, 4000)]
            lines += _response(rng, n * 10 + i + 1, n * 10 + i + 100, literal=literal, key=key)
        out.append(lines)
    return out


def test_usual_answers_are_read_as_imapclient_reads_them() -> None:
    cases = _generated(400, seed=3)
    read = [read_quick(lines, _date) for lines in cases]
    assert all(r is not None for r in read)  # every usual answer takes the quick path
    assert [r for r in read] == [_imapclient(lines) for lines in cases]


@pytest.mark.parametrize(
    "lines",
    [
        [b"3 (FLAGS (\\Seen))"],  # unsolicited: no UID, imapclient keys it by sequence number
        [b"1 (UID 5 FLAGS (\\Seen))", b"2 (UID 5 RFC822.SIZE 10)"],  # one message, two responses
        [b"1 (UID 5 FLAGS (NIL))"],
        [b"1 (UID 5 FLAGS (\\Seen) MODSEQ (12))"],  # an item we did not ask for
        [b"1 (uid 5 RFC822.SIZE 10)"],
        [b"1 (UID 05 RFC822.SIZE 10)"],  # imapclient keeps leading zeros as text
        [b"1 (UID 5 RFC822.SIZE 010)"],
        [b'1 (UID 5 INTERNALDATE "08-Jan-2024 \\"09:00:00 +0100")'],
        [b"1 (UID 5 INTERNALDATE NIL)"],
        [b"1 (UID 5 FLAGS (\\Seen)  RFC822.SIZE 10)"],
        [b"1 (UID 5 FLAGS (\\Seen) )"],
        [b"1 (UID 5 FLAGS (\\Seen [x]))"],
        [b'1 (UID 5 BODY[] "quoted")'],
        [b"1 (UID 5 BODY[] NIL)"],
        [(b"1 (UID 5 BODY[] {4}", b"abc"), b")"],  # not the length it announced
        [(b"1 (UID 5 BODY[]<0> {3}", b"abc"), b")"],
        [(b"1 (UID 5 BODY[] {3}", b"abc"), b" FLAGS (\\Seen))"],  # items after the literal
        [(b"1 (UID 5 BODY[] {3}", b"abc")],
        [(b"1 (RFC822.SIZE 3 BODY[] {3}", b"abc"), b")"],
        [None],
        [b"garbage"],
    ],
)
def test_anything_else_is_left_to_imapclient(lines: list[Any]) -> None:
    assert read_quick(lines, _date) is None


def test_a_real_server_answers_the_same_through_the_session(mailbox_user: MailboxUser) -> None:
    box = mailbox_user
    raws = [s.raw for s in generate_mailbox(30, seed=9)]
    box.dovecot.append_many(box.name, "INBOX", raws)
    with box.dovecot.client(box.name) as admin:
        admin.select_folder("INBOX")
        admin.add_flags([2, 3], [b"\\Seen", b"$Forwarded"])
    endpoint = imap.ImapEndpoint(
        host="127.0.0.1",
        port=box.dovecot.port,
        security=Security.PLAIN,
        username=box.name,
        allow_private_hosts=True,
    )
    with imap.connect(endpoint, SecretStr(box.password)) as conn:
        conn.examine("INBOX")
        uids = conn.all_uids()
        assert len(uids) == 30
        for items in (imap._META_ITEMS, ["BODY.PEEK[]"], ["BODY.PEEK[HEADER]"], ["RFC822.SIZE"]):
            quick = conn._fetch(uids, items)
            assert quick == conn._client.fetch(uids, items)
            lines = conn._client._imap.uid("FETCH", ",".join(map(str, uids)), f"({' '.join(items)})")[1]
            assert read_quick(lines, _date) is not None  # Dovecot's answers take the quick path
        metas = conn.fetch_meta(uids)
    assert [m.uid for m in metas] == uids
    assert set(metas[1].flags) == {"\\Seen", "$Forwarded"} and metas[0].flags == ()
