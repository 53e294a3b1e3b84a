"""Inline-forward detection: every client format we promise, and the body shapes that break parsers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from crm.rules.forwards import MAX_SCAN_CHARS, find_forwarded_senders, parse_mailbox

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "forwards"

JANE = ("jane.doe@acme.example", "Jane Doe")
JEAN = ("jean.dupont@globex.example", "Jean Dupont")
HANS = ("hans.mueller@initech.example", "Hans Müller")
MARIA = ("maria.garcia@umbrella.example", "María García")


def load(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("gmail_en.txt", (JANE,)),
        ("gmail_fr.txt", (JEAN,)),
        ("gmail_de.txt", (HANS,)),
        ("gmail_es.txt", (MARIA,)),
        ("outlook_en.txt", (JANE,)),
        ("outlook_en_underscores.txt", (JANE,)),
        ("outlook_unmarked.txt", (JANE,)),
        ("outlook_fr.txt", (JEAN,)),
        ("outlook_fr_bold.txt", (("jean.dupont@globex.example", "Dupont, Jean"),)),
        ("outlook_de.txt", (HANS,)),
        ("outlook_es.txt", (MARIA,)),
        ("apple_en.txt", (JANE,)),
        ("apple_fr.txt", (JEAN,)),
        ("thunderbird_en.txt", (JANE,)),
        ("thunderbird_fr.txt", (JEAN,)),
        ("quoted_reply.txt", (JANE,)),
        ("nested.txt", (("alice@ourco.example", "Alice Admin"), JANE)),
        ("bare_address.txt", (("jane.doe@acme.example", ""),)),
        (
            "wrapped_from.txt",
            (("jane.doe@acme.example", "Jane Alexandra Doe-Smythe of the Procurement Department"),),
        ),
        ("not_a_forward.txt", ()),
    ],
)
def test_client_formats(fixture: str, expected: tuple[tuple[str, str], ...]) -> None:
    assert find_forwarded_senders(load(fixture)) == expected


@pytest.mark.parametrize("fixture", ["gmail_en.txt", "outlook_fr.txt", "apple_en.txt", "thunderbird_fr.txt"])
def test_crlf_and_non_breaking_spaces(fixture: str) -> None:
    body = load(fixture)
    mangled = body.replace("\n", "\r\n").replace(" : ", "\u00a0: ").replace(": ", ":\u00a0")
    assert mangled != body
    assert find_forwarded_senders(mangled) == find_forwarded_senders(body)
    assert find_forwarded_senders(mangled) != ()


def test_deeply_quoted_block() -> None:
    body = "\n".join(">> > " + line for line in load("outlook_en.txt").splitlines())
    assert find_forwarded_senders(body) == (JANE,)


def test_same_sender_twice_is_reported_once() -> None:
    body = load("gmail_en.txt") + "\n\n" + load("outlook_en.txt")
    assert find_forwarded_senders(body) == (JANE,)


def test_marker_without_from_address_yields_nothing() -> None:
    body = "---------- Forwarded message ---------\nFrom: Jane Doe\nDate: Mon\nSubject: x\n\nhello"
    assert find_forwarded_senders(body) == ()


def test_unmarked_block_needs_date_and_subject() -> None:
    assert find_forwarded_senders("From: Jane <jane@acme.example>\nTo: bob@ourco.example\n\nhi") == ()


def test_only_the_first_part_of_a_huge_body_is_scanned() -> None:
    block = load("gmail_en.txt")
    assert find_forwarded_senders(block + "x" * MAX_SCAN_CHARS) == (JANE,)
    assert find_forwarded_senders("x\n" * MAX_SCAN_CHARS + block) == ()


@pytest.mark.parametrize(
    "body",
    [
        "a" * 5_000_000,
        ("From: " + "a" * 50_000 + "@") * 20,
        ("---------- Forwarded message ---------\n" + "From: x\n" * 40) * 3_000,
        "From: <" + "a@" * 100_000,
        "> " * 100_000 + "From: " + "<" * 100_000,
    ],
)
def test_hostile_bodies_finish_quickly(body: str) -> None:
    started = time.perf_counter()
    find_forwarded_senders(body)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Jane Doe <Jane.Doe@Acme.example>", ("jane.doe@acme.example", "Jane Doe")),
        ('"Doe, Jane" <jane@acme.example>', ("jane@acme.example", "Doe, Jane")),
        ("'Jane Doe' <jane@acme.example>", ("jane@acme.example", "Jane Doe")),
        ("Jane Doe [mailto:jane@acme.example]", ("jane@acme.example", "Jane Doe")),
        ("Jane Doe <jane@acme.example<mailto:jane@acme.example>>", ("jane@acme.example", "Jane Doe")),
        ("jane@acme.example (Jane Doe)", ("jane@acme.example", "Jane Doe")),
        ("jane@acme.example", ("jane@acme.example", "")),
        ("<jane@acme.example>", ("jane@acme.example", "")),
        ("jane@acme.example <jane@acme.example>", ("jane@acme.example", "")),
        ("Jane Doe", None),
        ("Jane <jane@localhost>", None),
        # Checked by email-validator, not by hand: these were accepted before.
        ("Jane <jane..doe@acme.example>", None),
        ("Jane <jane@server.local>", None),
        ("Jane <jane@acme.example.> ", ("jane@acme.example", "Jane")),
    ],
)
def test_parse_mailbox(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_mailbox(value) == expected
