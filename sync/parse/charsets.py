"""Charsets and text cleanup (the stdlib has no "declared charset, else what it really is"),
and header values: raw (8-bit bytes as surrogate escapes) to text, RFC 2047 words decoded.
"""

from __future__ import annotations

import codecs
import re
from email.header import decode_header

_RFC2047_WORK = 250_000  # "=?" count x value length above which decode_header is not tried

# Labels Python does not know, or knows as a narrower codec than mailers actually use.
_CHARSET_LABELS = {
    "windows-874": "cp874",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "x-mac-roman": "mac-roman",
    "x-gbk": "gb18030",
}
_CODEC_UPGRADES = {
    "ascii": "utf-8",  # mislabelled 8-bit text is far more often UTF-8 than anything else
    "iso8859-1": "cp1252",  # what browsers do: latin-1 labels routinely carry cp1252 quotes
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "tis-620": "cp874",
}
# Text codecs that are not character sets: decoding mail with them yields nonsense or surrogates.
_REJECTED_CODECS = frozenset(
    {"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "unicode_escape"}
)
_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_CONTROLS = {c: " " for c in [*range(1, 32), 127]} | {0: None}


def _codec_for(charset: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None when the label is unusable."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    label = _CHARSET_LABELS.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REJECTED_CODECS:
        return None
    return _CODEC_UPGRADES.get(info.name, info.name)


def _try_decode(data: bytes, codec: str, final: bool) -> str | None:
    try:
        return codecs.getincrementaldecoder(codec)("strict").decode(data, final)
    except (UnicodeError, LookupError, ValueError, TypeError):
        return None


def _decode_bytes(data: bytes, charset: str | None, *, final: bool = True) -> str:
    """Decode with the declared charset, falling back to UTF-8, then cp1252, then latin-1.

    `final=False` tolerates a multibyte sequence cut off at the end (used after truncation).
    Never raises: latin-1 maps every byte.
    """
    codec = _codec_for(charset)
    if codec and codec != "utf-8":
        text = _try_decode(data, codec, final)
        if text is not None:
            return text
    text = _try_decode(data, "utf-8", final)
    if text is not None:
        return text
    if codec and codec not in ("utf-8", "cp1252"):
        # A known but slightly wrong declaration (a few bad bytes in shift_jis, say) is still a
        # better guess than reading the text as Western European.
        try:
            return codecs.getincrementaldecoder(codec)("replace").decode(data, final)
        except (UnicodeError, LookupError, ValueError, TypeError):
            pass
    text = _try_decode(data, "cp1252", True)
    return text if text is not None else data.decode("latin-1")


def _clean_text(text: str) -> str:
    """Body text safe for PostgreSQL: no NUL, no lone surrogates, LF line ends."""
    text = text.replace("\x00", "").replace("\r\n", "\n")
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _clean_line(text: str) -> str:
    """Single-line header text: controls become spaces, NUL and surrogates go, ends stripped."""
    text = text.translate(_LINE_CONTROLS)
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text.strip()


# --------------------------------------------------------------------------------------------
# Header values. The parser keeps them raw: str with 8-bit bytes as surrogate escapes.


def _raw_bytes(value: object) -> bytes:
    return str(value).encode("utf-8", "surrogateescape")


def _header_text(value: object) -> str:
    """A raw header value as text: folding removed, 8-bit bytes read as UTF-8 (else cp1252)."""
    text = str(value)
    if not text.isascii():
        text = _decode_bytes(_raw_bytes(text), None)
    return text.replace("\r", "").replace("\n", "")


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded with `email.header.decode_header`; broken ones stay literal.

    decode_header's regex rescans the rest of the value from every "=?", so values with many of
    them and no "?=" would take quadratic time: those are left as they are.
    """
    if "=?" not in text or text.count("=?") * len(text) > _RFC2047_WORK:
        return text
    try:
        chunks = decode_header(text)
    except Exception:  # HeaderParseError on undecodable base64 words
        return text
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:  # unencoded text, which decode_header turned into raw-unicode-escape
            try:
                out.append(chunk.decode("raw-unicode-escape"))
            except UnicodeDecodeError:
                out.append(chunk.decode("latin-1"))
        else:
            out.append(_decode_bytes(chunk, charset))
    return "".join(out)


def _unstructured(value: object) -> str:
    """Value of a free-text header (Subject, List-Id, a filename, ...) as display text."""
    return _clean_line(_decode_words(_header_text(value)))
