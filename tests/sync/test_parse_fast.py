"""The optional parser accelerator (`sync.parse.fast`) must change nothing that is stored: every
field of `ParsedMessage` is compared with the accelerator on and off, over every corpus we have
(generated mail, the CPython email test messages, the malformed set, the eml fixtures), over
shapes where the library is known or suspected to read mail differently from the stdlib, and
over seeded byte mutations of all of them. It must also be taken for most ordinary mail (else
it accelerates nothing), and the product must work the same without the library installed."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.parse import DEFAULT_LIMITS, _accelerated, fast as accelerator, parse_message
from sync.parse.bounds import _Bounder
from tests.sync.test_parse_head import CORPUS, _near_the_caps

needs_library = pytest.mark.skipif(not accelerator.AVAILABLE, reason="fast-mail-parser not installed")

HEAD = b"From: Hank <hank@globex.test>\r\nTo: sales@acme.test\r\nMessage-ID: <edge@globex.test>\r\n"


def _multipart(*parts: bytes, boundary: bytes = b"B", head: bytes = HEAD, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    closing = b"--" + boundary + b"--\r\n" if close else b""
    return head + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n' + body + closing


def _edges() -> dict[str, bytes]:
    """Where the library reads mail its own way (issue 14) or might: each must come out the same."""
    text = b"Content-Type: text/plain\r\n\r\nhello"
    return {
        "date-without-seconds": HEAD + b"Date: Mon, 8 Jan 2024 09:00 +0100\r\n\r\nhi\r\n",
        "two-to-headers": HEAD + b"To: second@acme.test\r\nCc: a@x.test\r\nCc: b@x.test\r\n\r\nhi\r\n",
        "content-type-text": HEAD + b"Content-Type: text\r\n\r\nbare text type\r\n",
        "part-content-type-text": _multipart(b"Content-Type: text\r\n\r\nbare", text),
        "ascii-labelled-utf8": HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\ncaf\xc3\xa9\r\n",
        "broken-base64-part": _multipart(
            text, b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVB!!!ERi0x="
        ),
        "base64-missing-padding": _multipart(
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xL"
        ),
        "base64-whitespace": _multipart(
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBE Ri0x\r\n TGVu"
        ),
        "continuation-first": b" folded first\r\n" + HEAD + b"\r\nbody\r\n",
        "part-continuation-first": _multipart(b" folded\r\nContent-Type: text/plain\r\n\r\nx", text),
        "part-without-blank-line": _multipart(b"Content-Type: text/plain\r\nno blank line", text),
        "part-without-headers": _multipart(b"\r\njust a body", text),
        "cte-trailing-space": _multipart(
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64 \r\n\r\nJVBERi0x"
        ),
        "cte-uuencode": _multipart(
            b"Content-Type: application/x\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
        ),
        "qp-lf-attachment": (
            HEAD + b'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: application/x\n'
            b"Content-Transfer-Encoding: quoted-printable\n\nline=\none\ntwo=3D\n--B--\n"
        ),
        "qp-invalid": _multipart(
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=4"
        ),
        "preamble-with-boundary": HEAD
        + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\nsee --B here\r\n--B\r\n'
        + text
        + b"\r\n--B--\r\n",
        "repeated-delimiter": _multipart(b"", text).replace(b"--B\r\n\r\n", b"--B\r\n--B\r\n", 1),
        "boundary-prefix": _multipart(
            b'Content-Type: multipart/alternative; boundary="B1"\r\n\r\n--B1\r\n' + text + b"\r\n--B1--", text
        ),
        "boundary-in-text": _multipart(b"Content-Type: text/plain\r\n\r\nsee\r\n--B-- not really", text),
        "boundary-trailing-space": _multipart(text).replace(b"--B\r\n", b"--B   \r\n", 1),
        "no-closing-delimiter": _multipart(text, close=False),
        "epilogue": _multipart(text) + b"epilogue text\r\n",
        "8bit-part-header": _multipart(b'Content-Type: application/x; name="caf\xc3\xa9.bin"\r\n\r\nx', text),
        "rfc2231-filename": _multipart(
            b"Content-Type: application/x\r\nContent-Disposition: attachment; filename*=utf-8''caf%C3%A9.bin"
            b"\r\n\r\nx"
        ),
        "encoded-word-filename": _multipart(
            b'Content-Type: application/x; name="=?utf-8?q?caf=C3=A9.bin?="\r\n\r\nx', text
        ),
        "encoded-word-content-id": _multipart(
            b"Content-Type: image/png\r\nContent-ID: <=?utf-8?q?a?=>\r\n\r\nx"
        ),
        "folded-content-id": _multipart(b"Content-Type: image/png\r\nContent-ID:\r\n <a@b>\r\n\r\nx", text),
        "quoted-boundary-spaces": _multipart(text, boundary=b"a b  c"),
        "multipart-no-subtype": HEAD + b"Content-Type: multipart\r\n\r\n--B\r\nhello\r\n--B--\r\n",
        "multipart-no-boundary": HEAD + b"Content-Type: multipart/mixed\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n",
        "attached-message": _multipart(
            text, b"Content-Type: message/rfc822\r\n\r\nFrom: inner@globex.test\r\nSubject: in\r\n\r\ninner"
        ),
        "cr-only": _multipart(text).replace(b"\r\n", b"\r"),
        "lf-only": _multipart(text).replace(b"\r\n", b"\n"),
        "mixed-line-ends": _multipart(text, text).replace(b"\r\n", b"\n", 5),
        "nul-in-body": HEAD + b"\r\nnul\x00byte\r\n",
        "pdf-top-level": HEAD + b"Content-Type: application/pdf\r\n\r\n%PDF-1.4\nline\r\nmore\n",
        "empty-body": HEAD + b"\r\n",
        "header-only": HEAD,
        "html-only": HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hi <b>there</b></p>\r\n",
        "inline-text-attachment": _multipart(
            text, b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nfile"
        ),
        "two-text-parts": _multipart(text, b"Content-Type: text/plain\r\n\r\nsecond", text),
        "deep-nesting": b"".join(
            b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(300)
        ),
        "mbox-from-line": b"From hank@globex.test Mon Jan  8 09:00:00 2024\r\n" + HEAD + b"\r\nbody\r\n",
        "digest": HEAD
        + b'Content-Type: multipart/digest; boundary="D"\r\n\r\n--D\r\n\r\nFrom: x@y.test\r\n\r\nhi'
        b"\r\n--D--\r\n",
        "empty-part": _multipart(b"", text),
        "cte-trailing-tab": _multipart(
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\t\r\n\r\nJVBERi0x", text
        ),
        "cte-folded": _multipart(
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding:\r\n base64\r\n\r\nJVBERi0x", text
        ),
        "top-cte-trailing-space": HEAD
        + b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64 \r\n\r\nJVBERi0x\r\n",
        "content-type-trailing-space": _multipart(b"Content-Type: text/html \r\n\r\n<p>x</p>", text),
        "charset-latin1-trailing-space": _multipart(
            b'Content-Type: text/plain; charset="iso-8859-1" \r\n\r\ncaf\xe9', text
        ),
        "content-id-spaces": _multipart(b"Content-Type: image/png\r\nContent-ID:   <a@b>  \r\n\r\nx", text),
        "disposition-spaces": _multipart(
            b'Content-Type: application/x\r\nContent-Disposition: attachment ; filename="a b.txt" \r\n\r\nx',
            text,
        ),
        "windows-1252-body": HEAD
        + b"Content-Type: text/plain; charset=windows-1252\r\n\r\n\x93smart\x94\r\n",
    }


def _mutations(raws: dict[str, bytes], per_message: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """Seeded damage of the kinds real mail shows: bytes changed, lines dropped or doubled, cut off."""
    rng = random.Random(seed)
    pieces = [
        b"\r\n",
        b"\n",
        b"--",
        b" ",
        b"=",
        b":",
        b"\x00",
        b"\xff",
        b"=?",
        b"Content-Type: text/plain\r\n",
    ]
    for name, raw in raws.items():
        for n in range(per_message):
            data = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                if not data:
                    break
                at = rng.randrange(len(data))
                kind = rng.randrange(4)
                if kind == 0:
                    data[at : at + 1] = rng.choice(pieces)
                elif kind == 1:
                    end = data.find(b"\n", at)
                    del data[at : end + 1 if end >= 0 else len(data)]
                elif kind == 2:
                    line = data[at : data.find(b"\n", at) + 1]
                    data[at:at] = line
                else:
                    del data[at:]
            yield f"{name}-mutation-{n}", bytes(data)


def _differ(cases: dict[str, bytes]) -> list[str]:
    return [
        name for name, raw in cases.items() if parse_message(raw, fast=True) != parse_message(raw, fast=False)
    ]


def _taken(raw: bytes) -> bool:
    bounder = _Bounder(raw, DEFAULT_LIMITS)
    bounder.run()
    return _accelerated(raw, bounder, DEFAULT_LIMITS) is not None


@needs_library
def test_every_corpus_gives_identical_stored_fields() -> None:
    assert _differ(CORPUS | _near_the_caps()) == []


@needs_library
def test_known_defects_of_the_library_change_nothing() -> None:
    edges = _edges()
    assert _differ(edges) == []
    # The fallback is what keeps them equal: the library's own readings are never used for these.
    for name in (
        "broken-base64-part",
        "continuation-first",
        "deep-nesting",
        "attached-message",
        "mbox-from-line",
    ):
        assert not _taken(edges[name]), name


@needs_library
def test_mutated_mail_gives_identical_stored_fields() -> None:
    generated = [name for name in CORPUS if name.startswith("generated-")]
    sources = {k: v for k, v in CORPUS.items() if k not in generated[60:]} | _edges()
    assert _differ(dict(_mutations(sources, per_message=12, seed=14))) == []


@needs_library
def test_ordinary_mail_takes_the_fast_path() -> None:
    generated = [raw for name, raw in CORPUS.items() if name.startswith("generated-")]
    assert sum(map(_taken, generated)) >= 0.9 * len(generated)


def test_without_the_library_the_stdlib_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not installed (or switched off): the same results, from the stdlib alone."""
    sample = dict(list(CORPUS.items())[:40]) | _edges()
    expected = {name: parse_message(raw, fast=False) for name, raw in sample.items()}
    monkeypatch.setattr(accelerator, "_library", None)
    monkeypatch.setattr(accelerator, "AVAILABLE", False)
    assert not any(_taken(raw) for raw in sample.values())
    assert {name: parse_message(raw) for name, raw in sample.items()} == expected


@needs_library
@pytest.mark.parametrize("enabled", [True, False])
def test_the_setting_selects_it(monkeypatch: pytest.MonkeyPatch, enabled: bool) -> None:
    """`fast_parser` reaches the parser through the engine's parse pool (in process here)."""
    from core.settings import Settings
    from sync.pipeline import ParsePool

    calls: list[bytes] = []
    walk = accelerator.walk

    def counting(raw: bytes, *args: object) -> bool:
        calls.append(raw)
        return walk(raw, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(accelerator, "walk", counting)
    raws = [raw for name, raw in CORPUS.items() if name.startswith("generated-")][:20]
    pool = ParsePool(Settings(parse_workers=0, fast_parser=enabled))
    parsed = pool.submit([(uid, raw, None) for uid, raw in enumerate(raws)]).result()
    assert [p for _, p in parsed] == [parse_message(raw, fast=False) for raw in raws]
    assert (len(calls) >= 18) if enabled else calls == []


def test_not_installed_at_all() -> None:
    """With the package absent (its import fails), `sync.parse` imports and parses the same."""
    names = [name for name in CORPUS if name.startswith(("generated-", "malformed-"))][:30]
    code = (
        "import sys\n"
        "sys.modules['fast_mail_parser'] = None  # import fails as if not installed\n"
        "from sync.parse import fast, parse_message\n"
        "from tests.sync.test_parse_head import CORPUS\n"
        "assert not fast.AVAILABLE\n"
        f"for name in {names!r}:\n"
        "    print(repr(parse_message(CORPUS[name])))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [repr(parse_message(CORPUS[name], fast=False)) for name in names]
