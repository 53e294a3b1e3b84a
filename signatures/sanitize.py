"""HTML sanitising for e-mail signatures and for displaying received mail.

Why this module exists: signatures are typed by users and then pasted into every outgoing
mail, and received HTML mail is shown inside the CRM web UI. Both are attacker-controlled
HTML, so both go through bleach's *allow-list* sanitizer (never a deny-list or regexes):
only the tags, attributes, URL schemes and CSS properties listed here survive.

Two profiles exist:

* the **signature** profile is deliberately small (text formatting, links, images by
  http(s) URL). It is applied when a signature is saved (where ``{{ merge tags }}`` in URL
  attributes must survive so they can be rendered later) and again, strictly, after the
  merge tags have been rendered (merge values could contain markup or ``javascript:``).
* the **mail** profile (:func:`sanitize_mail_html`) is wider because real-world mail uses
  tables, ``<font>`` and inline styles; it allows ``cid:`` images and forces links to open
  in a new tab with ``rel="noopener noreferrer nofollow"``.

``<svg>`` and ``<math>`` are never allowed: foreign-content parsing differences between
sanitizer and browser are a known mutation-XSS route. Inline SVG in a signature is refused
with an explanation instead of being silently dropped, because users would otherwise not
understand why their logo vanished.

The plain-text alternative of a signature is derived with :mod:`html.parser` rather than
regexes over HTML.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import bleach
import tinycss2
from bleach import html5lib_shim
from bleach.css_sanitizer import CSSSanitizer

from core import html_text
from signatures.errors import InlineSvgRefused

__all__ = [
    "FORBIDDEN_TAGS",
    "MAIL_CSS_PROPERTIES",
    "MAIL_TAGS",
    "SIGNATURE_CSS_PROPERTIES",
    "SIGNATURE_TAGS",
    "SVG_IMAGE_WARNING",
    "SanitizedSignature",
    "html_to_text",
    "sanitize_mail_html",
    "sanitize_signature_html",
]

SVG_IMAGE_WARNING = (
    "The signature links an SVG image, but many mail clients do not display SVG images; prefer PNG or JPG."
)
REMOVED_IMAGE_WARNING = (
    "An image was removed because it was not linked by an http(s) URL; embedded (data:) "
    "and attached (cid:) images are not supported in signatures. Host the image on a web "
    "server and insert it by its https:// URL."
)

# Tags that must never be allowed, whatever profile; checked against the allow-lists below
# at import time so a future edit cannot silently re-enable them.
FORBIDDEN_TAGS: frozenset[str] = frozenset(
    {
        "applet",
        "base",
        "embed",
        "form",
        "frame",
        "frameset",
        "iframe",
        "input",
        "link",
        "math",
        "meta",
        "noscript",
        "object",
        "script",
        "style",
        "svg",
        "template",
        "textarea",
    }
)

# Elements whose *content* is dropped together with the tag (by default bleach strips the
# tag but keeps inner text, which would show CSS rules or script source as text).
_DROP_WITH_CONTENT: frozenset[str] = frozenset(
    {
        "applet",
        "head",
        "iframe",
        "math",
        "noembed",
        "noframes",
        "noscript",
        "object",
        "script",
        "select",
        "style",
        "svg",
        "template",
        "textarea",
        "title",
        "xmp",
    }
)

SIGNATURE_TAGS: frozenset[str] = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "div",
        "em",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "s",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "u",
        "ul",
    }
)

MAIL_TAGS: frozenset[str] = SIGNATURE_TAGS | frozenset(
    {
        "acronym",
        "address",
        "big",
        "caption",
        "center",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "dl",
        "dt",
        "font",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ins",
        "kbd",
        "pre",
        "q",
        "strike",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "tt",
    }
)

SIGNATURE_CSS_PROPERTIES: frozenset[str] = frozenset(
    {
        "background-color",
        "border",
        "border-bottom",
        "border-left",
        "border-radius",
        "border-right",
        "border-top",
        "color",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "height",
        "line-height",
        "margin",
        "margin-bottom",
        "margin-left",
        "margin-right",
        "margin-top",
        "max-width",
        "padding",
        "padding-bottom",
        "padding-left",
        "padding-right",
        "padding-top",
        "text-align",
        "text-decoration",
        "text-transform",
        "vertical-align",
        "width",
    }
)

MAIL_CSS_PROPERTIES: frozenset[str] = SIGNATURE_CSS_PROPERTIES | frozenset(
    {
        "border-collapse",
        "border-color",
        "border-spacing",
        "border-style",
        "border-width",
        "display",
        "font",
        "letter-spacing",
        "list-style-type",
        "max-height",
        "min-height",
        "min-width",
        "text-indent",
        "white-space",
        "word-break",
    }
)

for _tags in (SIGNATURE_TAGS, MAIL_TAGS):
    if _tags & FORBIDDEN_TAGS:  # pragma: no cover - guards future edits of the lists
        raise RuntimeError(f"forbidden tags in an allow-list: {sorted(_tags & FORBIDDEN_TAGS)}")

_COMMON_ATTRIBUTES: frozenset[str] = frozenset({"style", "title"})

_SIGNATURE_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "a": frozenset({"href"}),
    "img": frozenset({"src", "alt", "width", "height"}),
}

_MAIL_ATTRIBUTES: Mapping[str, frozenset[str]] = {
    "a": frozenset({"href"}),
    "img": frozenset({"src", "alt", "width", "height", "border", "align"}),
    "table": frozenset({"align", "bgcolor", "border", "cellpadding", "cellspacing", "width"}),
    "td": frozenset({"align", "bgcolor", "colspan", "height", "rowspan", "valign", "width"}),
    "th": frozenset({"align", "bgcolor", "colspan", "height", "rowspan", "valign", "width"}),
    "tr": frozenset({"align", "bgcolor", "valign"}),
    "col": frozenset({"span", "width"}),
    "colgroup": frozenset({"span", "width"}),
    "font": frozenset({"color", "face", "size"}),
    "p": frozenset({"align", "dir"}),
    "div": frozenset({"align", "dir"}),
    "span": frozenset({"dir"}),
}

_LINK_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto", "tel"})
_WEB_SCHEMES: frozenset[str] = frozenset({"http", "https"})

# CSS functions that are plain values; every other function (expression(), url(), var(),
# image-set(), ...) drops the whole declaration.
_SAFE_CSS_FUNCTIONS: frozenset[str] = frozenset({"rgb", "rgba", "hsl", "hsla"})
_SAFE_CSS_TOKEN_TYPES: frozenset[str] = frozenset(
    {"whitespace", "comment", "ident", "hash", "number", "percentage", "dimension", "string", "literal"}
)
_CSS_DANGER_WORDS: tuple[str, ...] = ("expression", "javascript", "vbscript", "behavior", "binding", "url(")

_WHITESPACE_AND_CONTROLS = re.compile(r"[`\x00-\x20\x7f-\xa0\s]+")


@dataclass(frozen=True)
class SanitizedSignature:
    """A signature ready to be stored: sanitized HTML, derived plain text, user warnings."""

    html: str
    text: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Profile:
    tags: frozenset[str]
    attributes: Mapping[str, frozenset[str]]
    url_schemes: Mapping[tuple[str, str], frozenset[str]]
    css_properties: frozenset[str]
    allow_merge_tags: bool
    link_targets: bool


_SIGNATURE_TEMPLATE = _Profile(
    tags=SIGNATURE_TAGS,
    attributes=_SIGNATURE_ATTRIBUTES,
    url_schemes={("a", "href"): _LINK_SCHEMES, ("img", "src"): _WEB_SCHEMES},
    css_properties=SIGNATURE_CSS_PROPERTIES,
    allow_merge_tags=True,
    link_targets=False,
)
_SIGNATURE_RENDERED = _Profile(
    tags=SIGNATURE_TAGS,
    attributes=_SIGNATURE_ATTRIBUTES,
    url_schemes={("a", "href"): _LINK_SCHEMES, ("img", "src"): _WEB_SCHEMES},
    css_properties=SIGNATURE_CSS_PROPERTIES,
    allow_merge_tags=False,
    link_targets=False,
)
_MAIL = _Profile(
    tags=MAIL_TAGS,
    attributes=_MAIL_ATTRIBUTES,
    url_schemes={("a", "href"): _LINK_SCHEMES, ("img", "src"): _WEB_SCHEMES | {"cid"}},
    css_properties=MAIL_CSS_PROPERTIES,
    allow_merge_tags=False,
    link_targets=True,
)


def _url_scheme(value: str) -> str | None:
    """Return the lower-cased scheme of ``value`` the way a browser would see it.

    Entities are decoded and whitespace/control characters removed first, so obfuscations
    like ``jav&#x09;ascript:`` or ``JaVaScRiPt :`` are recognised. ``""`` means "no scheme"
    (relative URL); ``None`` means the value cannot be parsed.
    """
    normalized = _WHITESPACE_AND_CONTROLS.sub("", html.unescape(value)).replace("\ufffd", "").lower()
    try:
        return urlsplit(normalized).scheme
    except ValueError:
        return None


def _url_allowed(value: str, schemes: frozenset[str], allow_merge_tags: bool) -> bool:
    if allow_merge_tags and value.strip().startswith("{{"):
        # A URL produced entirely by a merge tag, e.g. href="{{ company.website }}"; it is
        # checked again, strictly, after rendering.
        return True
    return _url_scheme(value) in schemes


def _attribute_filter(profile: _Profile) -> Callable[[str, str, str], bool]:
    def allow(tag: str, name: str, value: str) -> bool:
        if name not in _COMMON_ATTRIBUTES and name not in profile.attributes.get(tag, frozenset()):
            return False
        schemes = profile.url_schemes.get((tag, name))
        if schemes is not None:
            return _url_allowed(value, schemes, profile.allow_merge_tags)
        return True

    return allow


class _SafeCSSSanitizer(CSSSanitizer):
    """bleach's CSS sanitizer checks property *names* only; this one also checks values.

    A declaration is kept only if its property is allowed and its value consists of plain
    tokens (no ``url()``, ``expression()`` or other functions, no blocks), so
    ``color: expression(...)`` or ``background-color: url(javascript:...)`` are dropped.
    """

    def __init__(self, allowed_css_properties: frozenset[str]) -> None:
        super().__init__(allowed_css_properties=allowed_css_properties, allowed_svg_properties=())

    def sanitize_css(self, style: str) -> str:
        # bleach hands over the attribute value with character references still encoded
        # (it parses with consume_entities=False); decode them so the CSS is checked as the
        # browser will see it. The serializer re-escapes quotes and ampersands on output.
        declarations = tinycss2.parse_declaration_list(
            html.unescape(style), skip_comments=True, skip_whitespace=True
        )
        kept = [
            token
            for token in declarations
            if token.type == "declaration"
            and token.lower_name in self.allowed_css_properties
            and _css_value_safe(token.value)
        ]
        return "; ".join(f"{token.name}: {tinycss2.serialize(token.value).strip()}" for token in kept)


def _css_value_safe(tokens: list[Any]) -> bool:
    for token in tokens:
        if token.type == "function":
            if token.lower_name not in _SAFE_CSS_FUNCTIONS or not _css_value_safe(token.arguments):
                return False
            continue
        if token.type not in _SAFE_CSS_TOKEN_TYPES:
            return False
        text = tinycss2.serialize([token]).lower()
        if "\\" in text or any(word in text for word in _CSS_DANGER_WORDS):
            return False
    return True


class _DropDangerousContent(html5lib_shim.Filter):
    """Remove script/style/svg/... elements *with their content* before sanitizing."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        depth = 0
        for token in super().__iter__():
            kind = token["type"]
            name = str(token.get("name", "")).lower()
            if name in _DROP_WITH_CONTENT and kind in ("StartTag", "EndTag", "EmptyTag"):
                if kind == "StartTag":
                    depth += 1
                elif kind == "EndTag":
                    depth = max(0, depth - 1)
                continue
            if depth == 0:
                yield token


class _TidyUp(html5lib_shim.Filter):
    """Remove what sanitizing left useless: ``<img>`` without src, empty ``style=""``."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for token in super().__iter__():
            if token["type"] in ("StartTag", "EmptyTag"):
                attrs = token.get("data") or {}
                if token.get("name") == "img" and (None, "src") not in attrs:
                    continue
                if (None, "style") in attrs and not attrs[(None, "style")].strip():
                    attrs = {key: value for key, value in attrs.items() if key != (None, "style")}
                    token = {**token, "data": attrs}
            yield token


class _ExternalLinks(html5lib_shim.Filter):
    """Make links in displayed mail open in a new tab without referrer or opener."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for token in super().__iter__():
            if token["type"] == "StartTag" and token.get("name") == "a" and (None, "href") in token["data"]:
                attrs = dict(token["data"])
                attrs[(None, "rel")] = "noopener noreferrer nofollow"
                attrs[(None, "target")] = "_blank"
                token = {**token, "data": attrs}
            yield token


class _Cleaner(bleach.Cleaner):
    # Declared because bleach is untyped: mypy cannot infer it from the reassignment below.
    walker: Callable[[Any], Iterable[dict[str, Any]]]

    def __init__(self, profile: _Profile) -> None:
        filters: list[type[html5lib_shim.Filter]] = [_TidyUp]
        if profile.link_targets:
            filters.append(_ExternalLinks)
        protocols: set[str] = set()
        for schemes in profile.url_schemes.values():
            protocols |= schemes
        super().__init__(
            tags=profile.tags,
            attributes=_attribute_filter(profile),
            protocols=frozenset(protocols),
            strip=True,
            strip_comments=True,
            css_sanitizer=_SafeCSSSanitizer(profile.css_properties),
            filters=filters,
        )
        # bleach's tokenizer turns every tag outside ``tags`` into text before tree building,
        # which keeps the *content* of <script>/<style>/<svg>/... as visible text. Letting the
        # parser build those elements (with their real raw-text/foreign-content parsing) and
        # dropping them with everything inside, before bleach's own sanitizer filter runs,
        # removes that content; whatever else reaches the sanitizer is allow-listed as usual.
        self.parser = html5lib_shim.BleachHTMLParser(
            tags=profile.tags | _DROP_WITH_CONTENT,
            strip=True,
            consume_entities=False,
            namespaceHTMLElements=False,
        )
        base_walker = self.walker
        self.walker = lambda dom: _DropDangerousContent(base_walker(dom))


# bleach cleaners hold parser state and are not thread-safe: one set per thread.
_local = threading.local()


def _clean(text: str, profile: _Profile) -> str:
    cleaners: dict[int, _Cleaner] | None = getattr(_local, "cleaners", None)
    if cleaners is None:
        cleaners = _local.cleaners = {}
    cleaner = cleaners.get(id(profile))
    if cleaner is None:
        cleaner = cleaners[id(profile)] = _Cleaner(profile)
    return str(cleaner.clean(text)).strip()


class _ImageCollector(HTMLParser):
    """Collect inline ``<svg>`` elements and ``<img src>`` values."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.has_svg = False
        self.image_sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.has_svg = True
        elif tag == "img":
            self.image_sources.append(dict(attrs).get("src") or "")


def _collect_images(text: str) -> _ImageCollector:
    collector = _ImageCollector()
    collector.feed(text)
    collector.close()
    return collector


def _is_svg_url(url: str) -> bool:
    try:
        path = urlsplit(url.strip()).path.lower()
    except ValueError:
        return False
    return path.endswith((".svg", ".svgz"))


def _signature_warnings(source: str, cleaned: str, allow_merge_tags: bool) -> tuple[str, ...]:
    warnings: list[str] = []
    if any(
        not _url_allowed(src, _WEB_SCHEMES, allow_merge_tags) for src in _collect_images(source).image_sources
    ):
        warnings.append(REMOVED_IMAGE_WARNING)
    if any(_is_svg_url(src) for src in _collect_images(cleaned).image_sources):
        warnings.append(SVG_IMAGE_WARNING)
    return tuple(warnings)


def sanitize_signature_html(html: str) -> SanitizedSignature:
    """Sanitize signature HTML as typed by a user, before it is stored.

    Merge tags such as ``{{ sender.email }}`` survive, also inside ``href``/``src``.
    Raises :class:`~signatures.errors.InlineSvgRefused` if the HTML contains ``<svg>``.
    """
    if _collect_images(html).has_svg:
        raise InlineSvgRefused()
    cleaned = _clean(html, _SIGNATURE_TEMPLATE)
    return SanitizedSignature(
        html=cleaned,
        text=html_to_text(cleaned),
        warnings=_signature_warnings(html, cleaned, allow_merge_tags=True),
    )


def sanitize_rendered_signature_html(html: str) -> str:
    """Strictly sanitize a signature whose merge tags have been rendered.

    Unlike :func:`sanitize_signature_html` this gives merge-tag URLs no leeway: every
    ``href``/``src`` must now carry an allowed scheme. Inline SVG is dropped, not refused.
    """
    return _clean(html, _SIGNATURE_RENDERED)


def sanitize_mail_html(html: str) -> str:
    """Sanitize received HTML mail for display in the CRM.

    Wider than the signature allow-list (tables, ``<font>``, inline styles through the CSS
    sanitizer, ``cid:`` images) but never script, svg, math, iframe, form, object, base or
    meta. Links get ``rel="noopener noreferrer nofollow"`` and ``target="_blank"``.
    """
    return _clean(html, _MAIL)


def html_to_text(html: str) -> str:
    """Derive a plain-text version of (sanitized) HTML for text/plain mail parts.

    ``<br>``, ``<p>``, ``<div>``, ``<li>`` and other blocks become line breaks, list items
    get a ``- `` bullet and links are written as ``text <url>`` (`core.html_text`, the one
    extractor also used for received mail).
    """
    return html_text.html_to_text(html, html_text.COMPOSED)


_IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_SRC_ATTRIBUTE = re.compile(r'\ssrc="([^"]*)"', re.IGNORECASE)


def hold_remote_images(clean_html: str) -> tuple[str, int]:
    """Take the address out of every image that would load from the network (the sender would
    learn who read the mail, and when), keeping `cid:` images of the message's own parts.

    Works on the output of :func:`sanitize_mail_html`, whose serializer always double-quotes
    attributes; returns the HTML and how many images were held back, so a face can say so.
    """
    held = 0

    def hold(match: re.Match[str]) -> str:
        nonlocal held
        tag = match.group(0)
        src = _SRC_ATTRIBUTE.search(tag)
        if src is None or _url_scheme(src.group(1)) == "cid":
            return tag
        held += 1
        return tag[: src.start()] + ' data-held="remote"' + tag[src.end() :]

    return _IMG_TAG.sub(hold, clean_html), held
