"""Tests for mail-merge validation and rendering of signature templates.

They cover the three layers: save-time validation of the template AST, the jinja2 sandbox
at render time (exercised directly by bypassing validation) and the post-render sanitize
that neutralises dangerous merge *values*.
"""

from __future__ import annotations

import dataclasses
import typing
from html.parser import HTMLParser

import pytest

from signatures import render as render_module
from signatures.errors import (
    InlineSvgRefused,
    SignatureError,
    TemplateSyntaxInvalid,
    UnknownMergeTag,
    UnsafeTemplate,
)
from signatures.render import (
    KNOWN_TAGS,
    AccountInfo,
    CompanyInfo,
    MergeContext,
    RenderedSignature,
    SenderInfo,
    prepare_signature_template,
    render_signature,
    render_text,
    validate_template,
)

CTX = MergeContext(
    sender=SenderInfo(
        first_name="Ann",
        last_name="Smith",
        full_name="Ann Smith",
        job_title="Head of Sales",
        phone="+49 30 1234",
        mobile="",
        email="ann@acme.example",
    ),
    company=CompanyInfo(
        name="Acme & Co", website="https://acme.example/", phone="+49 30 1000", address="Main St 1"
    ),
    account=AccountInfo(email="sales@acme.example", display_name="Acme Sales"),
)


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))


def elements(fragment: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(fragment)
    parser.close()
    return parser.elements


def with_sender(**changes: str) -> MergeContext:
    return dataclasses.replace(CTX, sender=dataclasses.replace(CTX.sender, **changes))


def with_company(**changes: str) -> MergeContext:
    return dataclasses.replace(CTX, company=dataclasses.replace(CTX.company, **changes))


# --- known tags -------------------------------------------------------------------------


def test_known_tags_are_derived_from_the_context_dataclasses() -> None:
    hints = typing.get_type_hints(MergeContext)
    expected = sorted(
        f"{root.name}.{leaf.name}"
        for root in dataclasses.fields(MergeContext)
        for leaf in dataclasses.fields(hints[root.name])
    )

    assert isinstance(KNOWN_TAGS, tuple)
    assert list(KNOWN_TAGS) == expected
    assert {"sender.first_name", "sender.mobile", "company.name", "company.address", "account.email"} <= set(
        KNOWN_TAGS
    )
    assert len(KNOWN_TAGS) == 13


def test_merge_context_is_frozen() -> None:
    name = "first_name"  # assigned through setattr: mypy rightly rejects the plain assignment
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(CTX.sender, name, "Eve")


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "<p>{{ sender.first_name }} {{ sender.last_name }}</p>",
        "{{ company.name|upper }} {{ company.name|lower }} {{ company.name|title }} {{ company.name|trim }}",
        "{{ sender.mobile|default('n/a') }} {{ sender.phone|e }}",
        "{% if sender.mobile %}M: {{ sender.mobile }}{% elif sender.phone %}T{% else %}-{% endif %}",
        "{% if sender.job_title is defined and not sender.mobile %}x{% endif %}",
        "{{ sender['email'] }}",
        "{# a comment #}{{ account.display_name }}",
        "plain text without tags",
    ],
)
def test_valid_templates_pass(source: str) -> None:
    validate_template(source)


SANDBOX_ESCAPES = [
    "{{ sender.__class__ }}",
    "{{ sender.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ sender|attr('__class__') }}",
    "{{ '{0.__class__}'.format(sender) }}",
    "{{ 'x'.format_map(sender) }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self.__init__ }}",
    "{{ lipsum.__globals__ }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ sender['__class__'] }}",
    "{{ sender._private }}",
    "{{ range(10) }}",
    "{{ sender.first_name|safe }}",
    "{{ sender.first_name.upper() }}",
    "{{ sender.first_name|format(1) }}",
    "{{ sender.first_name|map('upper') }}",
]


@pytest.mark.parametrize("source", SANDBOX_ESCAPES)
def test_sandbox_escape_attempts_are_refused_at_validation(source: str) -> None:
    with pytest.raises(UnsafeTemplate) as excinfo:
        validate_template(source)

    message = str(excinfo.value)
    assert "not allowed" in message
    assert "{{ sender.first_name }}" in message  # tells the user what *is* allowed
    assert "Traceback" not in message
    assert "jinja2" not in message


@pytest.mark.parametrize("source", SANDBOX_ESCAPES)
def test_sandbox_escape_attempts_are_refused_at_render(source: str) -> None:
    with pytest.raises(UnsafeTemplate):
        render_signature(f"<p>{source}</p>", CTX)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{% set x = sender.first_name %}{{ x }}", "{% set %}"),
        ("{% set x %}a{% endset %}", "{% set %}"),
        ("{% import 'macros.html' as m %}", "{% import %}"),
        ("{% from 'macros.html' import m %}", "import"),
        ("{% include 'other.html' %}", "{% include %}"),
        ("{% extends 'base.html' %}", "{% extends %}"),
        ("{% macro m() %}x{% endmacro %}", "{% macro %}"),
        ("{% filter upper %}x{% endfilter %}", "{% filter %}"),
        ("{% with a = 1 %}{{ a }}{% endwith %}", "{% with %}"),
        ("{% autoescape false %}{{ sender.first_name }}{% endautoescape %}", "{% autoescape %}"),
        ("{% for x in sender %}{% endfor %}", "{% for %}"),
        ("{{ '{0}'.format(sender.first_name) }}", ".format(...)"),
        ("{{ 'x'.format_map(sender) }}", ".format_map(...)"),
        ("{{ sender|attr('first_name') }}", "'attr'"),
        ("{{ sender.first_name ~ 'x' }}", "concatenation"),
        ("{{ sender.first_name|default(sender.email) }}", "non-literal arguments"),
        ("{% if sender.first_name == 'Ann' %}x{% endif %}", "comparisons"),
    ],
)
def test_disallowed_constructs_are_named_in_the_message(source: str, reason: str) -> None:
    with pytest.raises(UnsafeTemplate) as excinfo:
        validate_template(source)

    assert reason in str(excinfo.value)


def test_unknown_merge_tag_lists_unknown_and_known_tags() -> None:
    with pytest.raises(UnknownMergeTag) as excinfo:
        validate_template("<p>{{ sender.nickname }} {{ company.name }} {{ customer.name }}</p>")

    error = excinfo.value
    assert error.unknown == ("customer.name", "sender.nickname")
    assert error.known == KNOWN_TAGS
    message = str(error)
    assert "{{ customer.name }}" in message
    assert "{{ sender.nickname }}" in message
    for tag in KNOWN_TAGS:
        assert "{{ " + tag + " }}" in message
    assert isinstance(error, SignatureError)


def test_root_object_alone_is_not_a_merge_tag() -> None:
    with pytest.raises(UnknownMergeTag) as excinfo:
        validate_template("{{ sender }}")

    assert excinfo.value.unknown == ("sender",)


def test_syntax_error_reports_line_number() -> None:
    with pytest.raises(TemplateSyntaxInvalid) as excinfo:
        validate_template("<p>Regards</p>\n<p>{{ sender.first_name }}</p>\n<p>{{ sender.last_name </p>")

    assert excinfo.value.lineno == 3
    assert "line 3" in str(excinfo.value)


def test_unclosed_if_is_a_syntax_error() -> None:
    with pytest.raises(TemplateSyntaxInvalid) as excinfo:
        validate_template("{% if sender.mobile %}\n{{ sender.mobile }}")

    assert "{% endif %}" in str(excinfo.value)


# --- rendering --------------------------------------------------------------------------


def test_render_fills_in_merge_tags_in_html_and_text() -> None:
    template = (
        "<p><strong>{{ sender.full_name }}</strong><br>{{ sender.job_title }}</p>"
        '<p><a href="{{ company.website }}">{{ company.name }}</a> | '
        '<a href="mailto:{{ sender.email }}">{{ sender.email }}</a></p>'
        "{% if sender.mobile %}<p>Mobile: {{ sender.mobile }}</p>{% endif %}"
    )

    result = render_signature(template, CTX)

    assert isinstance(result, RenderedSignature)
    assert result.html == (
        "<p><strong>Ann Smith</strong><br>Head of Sales</p>"
        '<p><a href="https://acme.example/">Acme &amp; Co</a> | '
        '<a href="mailto:ann@acme.example">ann@acme.example</a></p>'
    )
    assert result.text == "Ann Smith\nHead of Sales\nAcme & Co <https://acme.example/> | ann@acme.example"


def test_merge_tag_inside_attribute_survives_sanitizing_and_renders() -> None:
    saved = prepare_signature_template(
        '<a href="mailto:{{ sender.email }}" title="Mail {{ sender.first_name }}">write</a>'
        '<img src="https://cdn.acme.example/logo.png" alt="{{ company.name }}">'
    )

    result = render_signature(saved.html, CTX)

    assert elements(result.html) == [
        ("a", {"href": "mailto:ann@acme.example", "title": "Mail Ann"}),
        ("img", {"src": "https://cdn.acme.example/logo.png", "alt": "Acme & Co"}),
    ]


def test_filters_render() -> None:
    result = render_text(
        "{{ sender.first_name|upper }} {{ company.name|lower }} {{ sender.mobile|default('none', true) }}",
        CTX,
    )

    assert result == "ANN acme & co none"


def test_missing_values_render_empty() -> None:
    ctx = MergeContext()  # every field defaults to ""
    none_ctx = with_sender(
        job_title=typing.cast(str, None)
    )  # not a str on purpose: e.g. NULL from the database

    assert render_signature("<p>{{ sender.first_name }}|{{ company.name }}</p>", ctx).html == "<p>|</p>"
    assert render_signature("<p>[{{ sender.job_title }}]</p>", none_ctx).html == "<p>[]</p>"


@pytest.mark.parametrize(
    "value",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        '"><svg onload=alert(1)>',
    ],
)
def test_merge_values_are_html_escaped(value: str) -> None:
    result = render_signature("<p>{{ sender.first_name }}</p>", with_sender(first_name=value))

    assert elements(result.html) == [("p", {})]
    assert result.text == value  # shown literally in text mail, never as markup


def test_merge_value_cannot_break_out_of_attribute() -> None:
    ctx = with_sender(email='x@y.example" onmouseover="alert(1)')

    result = render_signature('<a href="mailto:{{ sender.email }}">mail</a>', ctx)

    [(tag, attrs)] = elements(result.html)
    assert tag == "a"
    assert set(attrs) <= {"href"}
    assert not any(name.startswith("on") for name in attrs)


@pytest.mark.parametrize(
    "website",
    [
        "javascript:alert(1)",
        " JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html,<script>alert(1)</script>",
        "acme.example",  # no scheme: not a usable link in mail either
    ],
)
def test_dangerous_url_in_merge_value_is_neutralised(website: str) -> None:
    result = render_signature(
        '<a href="{{ company.website }}">{{ company.name }}</a>', with_company(website=website)
    )

    assert elements(result.html) == [("a", {})]
    assert result.text == "Acme & Co"


def test_merge_values_are_not_evaluated_as_templates() -> None:
    ctx = with_sender(first_name="{{ sender.__class__ }}{% for x in y %}")

    result = render_signature("<p>{{ sender.first_name }}</p>", ctx)

    assert result.html == "<p>{{ sender.__class__ }}{% for x in y %}</p>"


def test_render_text_does_not_escape() -> None:
    assert render_text("{{ company.name }} <{{ sender.email }}>", CTX) == "Acme & Co <ann@acme.example>"


def test_render_text_validates() -> None:
    with pytest.raises(UnknownMergeTag):
        render_text("{{ sender.nick }}", CTX)


def test_render_refuses_inline_svg() -> None:
    with pytest.raises(InlineSvgRefused):
        render_signature("<p>{{ sender.first_name }}</p><svg></svg>", CTX)


def test_prepare_sanitizes_before_validating() -> None:
    # The unknown tag sits in an attribute bleach removes, so it never reaches storage.
    saved = prepare_signature_template('<p onclick="{{ sender.nick }}">{{ sender.first_name }}</p>')

    assert saved.html == "<p>{{ sender.first_name }}</p>"
    assert saved.text == "{{ sender.first_name }}"


def test_runtime_failure_becomes_signature_error() -> None:
    # Passes validation (literal args to an allowed filter) but fails inside jinja2.
    with pytest.raises(SignatureError) as excinfo:
        render_signature("<p>{{ sender.mobile|default('a', true, 'extra', 'args') }}</p>", CTX)

    assert type(excinfo.value) is SignatureError
    assert "could not be filled in" in str(excinfo.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ '{0.__class__}'.format(sender) }}",
        "{{ '{a.__class__}'.format_map({'a': sender}) }}",
        "{{ sender.__class__ }}",
        "{{ sender.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{% if sender.__class__ %}x{% endif %}",
    ],
)
def test_sandbox_blocks_escapes_even_without_validation(source: str) -> None:
    # Defence in depth: render directly in the sandbox, skipping validate_template.
    with pytest.raises(UnsafeTemplate) as excinfo:
        render_module._render(source, CTX, autoescape=True)

    assert "sandbox" in str(excinfo.value)


def test_sandbox_environment_has_no_globals_or_unsafe_filters() -> None:
    for env in (render_module._HTML_ENV, render_module._TEXT_ENV):
        assert env.globals == {}
        assert set(env.filters) == set(render_module.ALLOWED_FILTERS)
        assert "attr" not in env.filters
        assert "safe" not in env.filters
