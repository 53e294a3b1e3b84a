"""Tests for signature/mail HTML sanitizing.

The XSS checks parse the sanitizer output with :mod:`html.parser` (the way a consumer would
see it) and assert structural properties: no forbidden tag, no ``on*`` attribute, no URL
with a dangerous scheme, no dangerous CSS. Substring checks alone would miss encodings.
"""

from __future__ import annotations

import dataclasses
import html
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from signatures.errors import InlineSvgRefused, SignatureError
from signatures.sanitize import (
    FORBIDDEN_TAGS,
    MAIL_TAGS,
    SIGNATURE_TAGS,
    SVG_IMAGE_WARNING,
    SanitizedSignature,
    html_to_text,
    sanitize_mail_html,
    sanitize_rendered_signature_html,
    sanitize_signature_html,
)

URL_ATTRIBUTES = frozenset(
    {"href", "src", "action", "formaction", "xlink:href", "background", "poster", "data", "srcdoc"}
)
CSS_DANGER = ("expression", "url(", "javascript", "vbscript", "behavior", "binding", "\\")


class _Inspector(HTMLParser):
    """Collects every start tag with its attributes and all text of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def inspect(fragment: str) -> _Inspector:
    inspector = _Inspector()
    inspector.feed(fragment)
    inspector.close()
    return inspector


def scheme_of(url: str) -> str:
    """The scheme a browser would see: entities decoded, whitespace/controls removed."""
    normalized = re.sub(r"[\x00-\x20\x7f-\xa0\s]+", "", html.unescape(url)).lower()
    return urlsplit(normalized).scheme


def assert_safe(output: str, allowed_tags: frozenset[str], image_schemes: frozenset[str]) -> None:
    parsed = inspect(output)
    for tag, attrs in parsed.elements:
        assert tag in allowed_tags, f"disallowed tag <{tag}> in {output!r}"
        assert tag not in FORBIDDEN_TAGS
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler {name} in {output!r}"
            assert name != "http-equiv"
            if name in URL_ATTRIBUTES:
                allowed = image_schemes if tag == "img" else {"http", "https", "mailto", "tel"}
                assert scheme_of(value) in allowed, f"{name}={value!r} in {output!r}"
            if name == "style":
                without_comments = re.sub(r"/\*.*?\*/", "", html.unescape(value), flags=re.DOTALL)
                normalized = re.sub(r"\s+", "", without_comments).lower()
                assert not any(word in normalized for word in CSS_DANGER), output
    # Executable text that survived as text would at least show that content was not dropped.
    assert "alert(" not in "".join(parsed.text)


XSS_VECTORS = [
    pytest.param("<script>alert(1)</script>", id="script"),
    pytest.param("<SCRIPT SRC=//evil.example/x.js></SCRIPT>", id="script-src"),
    pytest.param("<img src=x onerror=alert(1)>", id="img-onerror"),
    pytest.param('<img src="https://ok.example/a.png" onerror="alert(1)" onload=alert(2)>', id="img-onload"),
    pytest.param("<IMG SRC=JaVaScRiPt:alert('XSS')>", id="img-javascript"),
    pytest.param('<a href="javascript:alert(1)">x</a>', id="a-javascript"),
    pytest.param('<a href="JaVaScRiPt:alert(1)">x</a>', id="a-mixed-case"),
    pytest.param('<a href="jav&#x09;ascript:alert(1)">x</a>', id="a-entity-tab"),
    pytest.param('<a href="jav\tascript:alert(1)">x</a>', id="a-literal-tab"),
    pytest.param('<a href="java\nscript:alert(1)">x</a>', id="a-newline"),
    pytest.param('<a href=" &#14;  javascript:alert(1)">x</a>', id="a-leading-control"),
    pytest.param('<a href="&#106;avascript:alert(1)">x</a>', id="a-decimal-entity"),
    pytest.param(
        '<a href="&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;&#x3A;alert(1)">x</a>',
        id="a-hex-entities",
    ),
    pytest.param(
        '<a href="&#0000106&#0000097&#0000118&#0000097&#0000115&#0000099&#0000114&#0000105'
        '&#0000112&#0000116&#0000058alert(1)">x</a>',
        id="a-padded-entities-no-semicolon",
    ),
    pytest.param('<a href="javascript&colon;alert(1)">x</a>', id="a-named-colon"),
    pytest.param('<a href="vbscript:msgbox(1)">x</a>', id="a-vbscript"),
    pytest.param('<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>', id="a-data"),
    pytest.param('<a href="https://ok.example/" onclick="alert(1)">ok</a>', id="a-onclick"),
    pytest.param('<div onmouseover="alert(1)">hover</div>', id="div-onmouseover"),
    pytest.param("<body onload=alert(1)>", id="body-onload"),
    pytest.param("<details open ontoggle=alert(1)>x</details>", id="details-ontoggle"),
    pytest.param('<video><source onerror="alert(1)"></video>', id="video-source"),
    pytest.param("<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", id="math-mglyph"),
    pytest.param(
        "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
        id="math-form-mutation",
    ),
    pytest.param(
        '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
        id="math-xlink",
    ),
    pytest.param('<p style="width: expression(alert(1))">x</p>', id="css-expression"),
    pytest.param('<p style="color: expr/**/ession(alert(1))">x</p>', id="css-expression-comment"),
    pytest.param('<p style="color: expr\\65 ssion(alert(1))">x</p>', id="css-expression-escape"),
    pytest.param('<p style="color: expr&#101;ssion(alert(1))">x</p>', id="css-expression-entity"),
    pytest.param('<p style="background-color: &#117rl(javascript:alert(1))">x</p>', id="css-url-entity"),
    pytest.param('<p style="background:url(javascript:alert(1))">x</p>', id="css-background-url"),
    pytest.param('<p style="background-color: url(javascript:alert(1))">x</p>', id="css-allowed-prop-url"),
    pytest.param(
        '<div style="behavior: url(x.htc); -moz-binding: url(https://evil.example/x.xml#xss)">x</div>',
        id="css-behavior-binding",
    ),
    pytest.param('<meta http-equiv="refresh" content="0;url=javascript:alert(1)">', id="meta-refresh"),
    pytest.param('<base href="https://evil.example/">', id="base"),
    pytest.param(
        '<form action="https://evil.example/"><input name=q>'
        '<button formaction="javascript:alert(1)">go</button></form>',
        id="form",
    ),
    pytest.param('<iframe src="javascript:alert(1)"></iframe>', id="iframe"),
    pytest.param('<iframe srcdoc="<script>alert(1)</script>"></iframe>', id="iframe-srcdoc"),
    pytest.param('<object data="javascript:alert(1)"></object>', id="object"),
    pytest.param('<embed src="javascript:alert(1)">', id="embed"),
    pytest.param('<img src="data:image/png;base64,iVBORw0KGgo=">', id="img-data-png"),
    pytest.param('<img src="data:image/svg+xml;base64,PHN2Zz4=">', id="img-data-svg"),
    pytest.param('<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>', id="noscript"),
    pytest.param("<style><img src=x onerror=alert(1)></style>", id="style-img"),
    pytest.param("<style>@import 'https://evil.example/x.css';</style>", id="style-import"),
    pytest.param('<link rel=stylesheet href="https://evil.example/x.css">', id="link"),
    pytest.param("<textarea><img src=x onerror=alert(1)></textarea>", id="textarea"),
    pytest.param("<title><img src=x onerror=alert(1)></title>", id="title"),
    pytest.param('<!--<img src="--><img src=x onerror=alert(1)//">', id="comment-break"),
    pytest.param("<img src=x:alert(alt) onerror=eval(src) alt=0>", id="img-eval-src"),
    pytest.param('<a href="  javascript:alert(1)">x</a>', id="a-leading-spaces"),
]

SVG_VECTORS = [
    pytest.param("<svg><script>alert(1)</script></svg>", id="svg-script"),
    pytest.param("<svg onload=alert(1)>", id="svg-onload"),
    pytest.param("<svg/onload=alert(1)>", id="svg-slash-onload"),
    pytest.param('<SVG><a xlink:href="javascript:alert(1)"><text>x</text></a></SVG>', id="svg-xlink"),
    pytest.param("<p>hi</p><svg><animate onbegin=alert(1) attributeName=x dur=1s>", id="svg-animate"),
]

SIGNATURE_IMAGE_SCHEMES = frozenset({"http", "https"})
MAIL_IMAGE_SCHEMES = frozenset({"http", "https", "cid"})


@pytest.mark.parametrize("payload", XSS_VECTORS + SVG_VECTORS)
def test_safety_check_flags_the_raw_vector(payload: str) -> None:
    # Guards the oracle itself: every vector must fail assert_safe before sanitizing,
    # otherwise the sanitizer tests below would pass vacuously.
    with pytest.raises(AssertionError):
        assert_safe(payload, SIGNATURE_TAGS, SIGNATURE_IMAGE_SCHEMES)


@pytest.mark.parametrize("payload", XSS_VECTORS)
def test_signature_sanitizer_removes_xss(payload: str) -> None:
    result = sanitize_signature_html(payload)

    assert_safe(result.html, SIGNATURE_TAGS, SIGNATURE_IMAGE_SCHEMES)
    assert_safe(sanitize_rendered_signature_html(payload), SIGNATURE_TAGS, SIGNATURE_IMAGE_SCHEMES)


@pytest.mark.parametrize("payload", XSS_VECTORS + SVG_VECTORS)
def test_mail_sanitizer_removes_xss(payload: str) -> None:
    output = sanitize_mail_html(payload)

    assert_safe(output, MAIL_TAGS, MAIL_IMAGE_SCHEMES)


@pytest.mark.parametrize("payload", XSS_VECTORS + SVG_VECTORS)
def test_mail_sanitizer_output_is_stable(payload: str) -> None:
    # Re-sanitizing must not change anything: output that parses differently the second
    # time is how mutation XSS starts.
    once = sanitize_mail_html(payload)

    assert sanitize_mail_html(once) == once


@pytest.mark.parametrize("payload", SVG_VECTORS)
def test_signature_refuses_inline_svg(payload: str) -> None:
    with pytest.raises(InlineSvgRefused) as excinfo:
        sanitize_signature_html(payload)

    message = str(excinfo.value)
    assert "Gmail" in message
    assert "Outlook" in message
    assert "PNG" in message
    assert "URL" in message
    assert isinstance(excinfo.value, SignatureError)


def test_svg_and_math_are_never_allowed() -> None:
    for allow_list in (SIGNATURE_TAGS, MAIL_TAGS):
        assert "svg" not in allow_list
        assert "math" not in allow_list
        assert not allow_list & FORBIDDEN_TAGS
    assert {"script", "iframe", "form", "object", "embed", "base", "meta", "style"} <= FORBIDDEN_TAGS


def test_css_declarations_with_unsafe_values_are_dropped_individually() -> None:
    output = sanitize_mail_html(
        '<p style="color: red; background-color: expression(alert(1)); '
        'font-family: &quot;Helvetica Neue&quot;, Arial; width: url(x); color: rgb(1, 2, 3)">x</p>'
    )

    assert inspect(output).elements == [
        ("p", {"style": 'color: red; font-family: "Helvetica Neue", Arial; color: rgb(1, 2, 3)'})
    ]


def test_style_attribute_emptied_by_css_sanitizer_is_removed() -> None:
    assert sanitize_mail_html('<p style="position: fixed; behavior: url(x.htc)">x</p>') == "<p>x</p>"


def test_dropped_elements_lose_their_content() -> None:
    output = sanitize_mail_html(
        "<style>p { color: red }</style><script>var secret = 1;</script><p>visible</p>"
        "<svg><text>svg text</text></svg>"
    )

    assert output == "<p>visible</p>"


def test_signature_keeps_safe_formatting_links_and_images() -> None:
    source = (
        '<p style="color: #333; font-size: 12px; position: fixed">'
        "<strong>Ann</strong> <em>Smith</em></p>"
        '<a href="https://acme.example/" title="Acme">Acme</a> '
        '<a href="mailto:ann@acme.example">ann@acme.example</a> '
        '<a href="tel:+4930123">call</a>'
        '<img src="https://cdn.acme.example/logo.png" alt="Acme logo" width="120">'
    )

    result = sanitize_signature_html(source)

    elements = inspect(result.html).elements
    assert ("p", {"style": "color: #333; font-size: 12px"}) in elements
    assert ("a", {"href": "https://acme.example/", "title": "Acme"}) in elements
    assert ("a", {"href": "mailto:ann@acme.example"}) in elements
    assert ("a", {"href": "tel:+4930123"}) in elements
    assert (
        "img",
        {"src": "https://cdn.acme.example/logo.png", "alt": "Acme logo", "width": "120"},
    ) in elements
    assert result.warnings == ()


def test_signature_result_is_frozen() -> None:
    result = sanitize_signature_html("<p>x</p>")

    assert isinstance(result, SanitizedSignature)
    name = "html"  # assigned through setattr: mypy rightly rejects the plain assignment
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(result, name, "<script></script>")


def test_empty_signature() -> None:
    assert sanitize_signature_html("") == SanitizedSignature(html="", text="", warnings=())


@pytest.mark.parametrize(
    "src",
    ["data:image/png;base64,iVBORw0KGgo=", "cid:logo@acme", "/relative/logo.png", "ftp://acme.example/a.png"],
)
def test_signature_images_only_by_http_url(src: str) -> None:
    result = sanitize_signature_html(f'<p>Ann</p><img src="{src}" alt="logo">')

    assert [tag for tag, _ in inspect(result.html).elements] == ["p"]
    assert len(result.warnings) == 1
    assert "http(s) URL" in result.warnings[0]


def test_svg_image_url_is_accepted_with_warning() -> None:
    result = sanitize_signature_html('<img src="https://cdn.acme.example/logo.SVG?v=2" alt="logo">')

    assert inspect(result.html).elements == [
        ("img", {"src": "https://cdn.acme.example/logo.SVG?v=2", "alt": "logo"})
    ]
    assert result.warnings == (SVG_IMAGE_WARNING,)
    assert "many mail clients do not display SVG images; prefer PNG or JPG" in SVG_IMAGE_WARNING


def test_merge_tags_survive_signature_sanitizing() -> None:
    source = (
        "<p>{{ sender.full_name }}{% if sender.job_title %}, {{ sender.job_title|upper }}{% endif %}</p>"
        '<a href="mailto:{{ sender.email }}">{{ sender.email }}</a>'
        "<a href=\"{{ company.website }}\">{{ company.name|default('Acme') }}</a>"
        '<a href="tel:{{ sender.phone }}">{{ sender.phone }}</a>'
    )

    result = sanitize_signature_html(source)

    assert result.html == source
    hrefs = [attrs["href"] for tag, attrs in inspect(result.html).elements if tag == "a"]
    assert hrefs == ["mailto:{{ sender.email }}", "{{ company.website }}", "tel:{{ sender.phone }}"]


def test_merge_tag_urls_are_not_allowed_after_rendering() -> None:
    # The leeway for "{{ ... }}" URLs exists only while the template is unrendered.
    output = sanitize_rendered_signature_html('<a href="{{ company.website }}">Acme</a>')

    assert output == "<a>Acme</a>"


def test_merge_tag_after_dangerous_scheme_is_removed() -> None:
    result = sanitize_signature_html('<a href="javascript:{{ sender.email }}">x</a>')

    assert result.html == "<a>x</a>"


def test_mail_allows_tables_fonts_styles_and_cid_images() -> None:
    source = (
        '<table width="100%" cellpadding="4"><tr><td bgcolor="#eeeeee" style="padding: 4px">'
        '<font color="red" face="Arial">Hi</font></td></tr></table>'
        '<img src="cid:part1.abc@mail" alt="inline">'
    )

    output = sanitize_mail_html(source)

    elements = inspect(output).elements
    assert ("table", {"width": "100%", "cellpadding": "4"}) in elements
    assert ("td", {"bgcolor": "#eeeeee", "style": "padding: 4px"}) in elements
    assert ("font", {"color": "red", "face": "Arial"}) in elements
    assert ("img", {"src": "cid:part1.abc@mail", "alt": "inline"}) in elements


def test_mail_links_open_in_new_tab_without_referrer() -> None:
    output = sanitize_mail_html(
        '<a href="https://acme.example/" target="_self" rel="opener">Acme</a><a name="x">no href</a>'
    )

    elements = inspect(output).elements
    assert elements == [
        (
            "a",
            {"href": "https://acme.example/", "rel": "noopener noreferrer nofollow", "target": "_blank"},
        ),
        ("a", {}),
    ]


def test_html_to_text_line_breaks_and_links() -> None:
    source = (
        "<p>Ann Smith</p><div>CEO<br>Acme &amp; Co</div>"
        "<ul><li>one</li><li>two</li></ul>"
        '<p><a href="https://acme.example/">Our website</a> | '
        '<a href="mailto:ann@acme.example">ann@acme.example</a> | '
        '<a href="https://acme.example/">https://acme.example/</a></p>'
    )

    assert html_to_text(source) == (
        "Ann Smith\nCEO\nAcme & Co\n- one\n- two\n"
        "Our website <https://acme.example/> | ann@acme.example | https://acme.example/"
    )


def test_html_to_text_collapses_whitespace_and_keeps_blank_line_from_double_br() -> None:
    assert html_to_text("<div>\n   Ann\n   Smith  </div>\n\n<div>a<br><br>b</div>") == "Ann Smith\na\n\nb"


def test_signature_text_is_derived_from_sanitized_html() -> None:
    result = sanitize_signature_html('<p>Ann<script>alert(1)</script></p><a href="javascript:x()">click</a>')

    assert result.text == "Ann\nclick"


@pytest.mark.parametrize(
    ("source", "held"),
    [
        ('<img src="https://tracker.example.com/p.gif">', 1),
        ('<img src="http://a.example/x.png" alt="logo"><img src="HTTPS://b.example/y">', 2),
        ('<img src="//cdn.example.com/x.png">', 0),  # scheme-relative: the sanitizer drops it
        ('<img src="cid:part1@mail">', 0),  # the message's own part
        ("<p>no images</p>", 0),
    ],
)
def test_remote_images_are_held_back(source: str, held: int) -> None:
    from signatures import hold_remote_images, sanitize_mail_html

    shown, count = hold_remote_images(sanitize_mail_html(source))
    assert count == held
    assert "tracker" not in shown and "cdn.example" not in shown and "a.example" not in shown
