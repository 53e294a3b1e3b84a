"""Plain text from HTML, one extractor for the whole product: the text body of received HTML-only
mail (`sync.parse`) and the text part of signatures (`signatures`).

Mail HTML is hostile data, so the extractor is bounded in time (see `html_to_text`) and never
raises. Two styles share the same rules for hidden content, blocks and whitespace:

* `READING` (received mail): paragraphs separated by a blank line, other blocks by a line
  break, links shown as their text only;
* `COMPOSED` (a text/plain part we write, e.g. a signature): one line per block, list items
  with a "- " bullet, links written as `text <url>` unless the text already is the address.

Breaks are collected as a pending level, so nested or adjacent block tags (`</li><li>`,
`</div></td></tr>`) give one break instead of a stack of empty lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["COMPOSED", "READING", "TextStyle", "html_to_text"]

# Characters HTMLParser.close() may re-scan (see `html_to_text`).
_CLOSE_BUDGET = 20_000_000

_PARAGRAPHS = frozenset({
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol", "dl", "pre", "hr",
})  # fmt: skip
_BLOCKS = frozenset({
    "address", "article", "aside", "center", "dd", "div", "dt", "fieldset", "figcaption", "figure",
    "footer", "form", "header", "li", "main", "nav", "section", "tbody", "thead", "tfoot", "tr",
})  # fmt: skip
_CELLS = frozenset({"td", "th"})
_HIDDEN = frozenset({"script", "style", "title", "template"})
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TextStyle:
    paragraph_gap: int  # newlines between paragraphs (2: a blank line)
    bullets: bool  # "- " before list items
    links: bool  # "text <url>" after a link whose text is not its address


READING = TextStyle(paragraph_gap=2, bullets=False, links=False)
COMPOSED = TextStyle(paragraph_gap=1, bullets=True, links=True)


class _TextExtractor(HTMLParser):
    def __init__(self, style: TextStyle) -> None:
        super().__init__(convert_charrefs=True)
        self.style = style
        self.pieces: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._breaks = 0  # newlines owed before the next visible text
        self._bullet = False  # a "- " owed before the next visible text
        self._links: list[tuple[str, int]] = []  # (href, index in pieces) of open links

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, opening=True)
        if tag == "a" and self.style.links:
            self._links.append(((dict(attrs).get("href") or "").strip(), len(self.pieces)))

    def handle_endtag(self, tag: str) -> None:
        self._tag(tag, opening=False)
        if tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.pieces[start:]).strip()
            if href and not _link_is_redundant(label, href):
                self.pieces.append(f" <{href}>" if label else f"<{href}>")

    def _tag(self, tag: str, *, opening: bool) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden + (1 if opening else -1))
        elif tag == "pre":
            self._pre = max(0, self._pre + (1 if opening else -1))
        if tag == "br":
            if opening:
                self._breaks = min(2, self._breaks + 1)
        elif tag in _PARAGRAPHS:
            self._breaks = max(self._breaks, self.style.paragraph_gap)
        elif tag in _BLOCKS:
            self._breaks = max(self._breaks, 1)
            if tag == "li" and opening and self.style.bullets:
                self._bullet = True
        elif tag in _CELLS and opening:
            self.pieces.append(" ")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        text = data if self._pre else _SPACE.sub(" ", data)
        if self._breaks or self._bullet:
            if not text.strip():
                return
            if self._breaks and self.pieces:
                self.pieces.append("\n" * self._breaks)
            if self._bullet:
                self.pieces.append("- ")
                text = text.lstrip()
            self._breaks, self._bullet = 0, False
        self.pieces.append(text)


def _link_is_redundant(label: str, href: str) -> bool:
    """True if printing `<href>` after `label` would only repeat the label."""
    bare = re.sub(r"^(mailto:|tel:|https?://)", "", href, flags=re.IGNORECASE).rstrip("/")
    label = label.rstrip("/")
    return label in (href, bare) or re.sub(r"^https?://", "", label, flags=re.IGNORECASE) == bare


def html_to_text(html: str, style: TextStyle = READING) -> str:
    """Plain text from HTML using html.parser, bounded in time; never raises.

    `feed()` is linear: it stops at the first construct that never terminates and keeps the
    rest pending. `close()` then forces through the pending tail, re-scanning it once per "<"
    (quadratic on "<!--<!--<!--..." in Python 3.11), so it runs only when that stays cheap.
    Otherwise the tail is dropped, which is also what browsers do with an unterminated
    comment or tag: everything after it is swallowed.
    """
    extractor = _TextExtractor(style)
    try:
        extractor.feed(html)
        tail = extractor.rawdata
        if len(tail) * (tail.count("<") + 1) <= _CLOSE_BUDGET:
            extractor.close()
    except Exception:  # html.parser raises AssertionError on some bogus declarations
        pass
    return "\n".join(" ".join(line.split()) for line in "".join(extractor.pieces).split("\n")).strip()
