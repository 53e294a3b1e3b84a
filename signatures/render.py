"""Mail-merge for signatures: ``{{ sender.first_name }}`` style tags rendered with jinja2.

Why it looks the way it does: signature templates are written by users, so template
injection (SSTI) is the main risk. Defence is layered:

1. :func:`validate_template` runs when a signature is *saved*. It walks the jinja2 AST and
   accepts only a tiny language: output of known merge tags, string literals, the filters
   in :data:`ALLOWED_FILTERS`, a few tests and ``{% if %}`` blocks. Calls, loops,
   ``{% set %}``, imports, macros and any ``_``-prefixed attribute are refused, and unknown
   merge tags are reported together with the list of known ones so the user can fix them.
2. Rendering happens in jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`
   with globals removed and only the allowed filters/tests registered; any sandbox or
   render error becomes a :class:`~signatures.errors.SignatureError` with a readable message.
3. The HTML rendering autoescapes merge values, and its result is sanitized again, strictly,
   because a merge value (e.g. a website of ``javascript:alert(1)``) can still land in an
   ``href``.

The merge context is a plain frozen dataclass tree; :data:`KNOWN_TAGS` is derived from its
fields so the list of tags lives in exactly one place.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from signatures.errors import (
    SignatureError,
    TemplateSyntaxInvalid,
    UnknownMergeTag,
    UnsafeTemplate,
)
from signatures.sanitize import (
    SanitizedSignature,
    html_to_text,
    sanitize_rendered_signature_html,
    sanitize_signature_html,
)

__all__ = [
    "ALLOWED_FILTERS",
    "ALLOWED_TESTS",
    "KNOWN_TAGS",
    "AccountInfo",
    "CompanyInfo",
    "MergeContext",
    "RenderedSignature",
    "SenderInfo",
    "prepare_signature_template",
    "render_signature",
    "render_text",
    "validate_template",
]


@dataclass(frozen=True)
class SenderInfo:
    """The CRM user sending the mail."""

    first_name: str = ""
    last_name: str = ""
    full_name: str = ""
    job_title: str = ""
    phone: str = ""
    mobile: str = ""
    email: str = ""


@dataclass(frozen=True)
class CompanyInfo:
    """The sender's own company."""

    name: str = ""
    website: str = ""
    phone: str = ""
    address: str = ""


@dataclass(frozen=True)
class AccountInfo:
    """The mailbox the mail is sent from."""

    email: str = ""
    display_name: str = ""


@dataclass(frozen=True)
class MergeContext:
    """Everything a signature template may reference; fields are the merge-tag roots."""

    sender: SenderInfo = field(default_factory=SenderInfo)
    company: CompanyInfo = field(default_factory=CompanyInfo)
    account: AccountInfo = field(default_factory=AccountInfo)


@dataclass(frozen=True)
class RenderedSignature:
    """A rendered, sanitized signature and its plain-text alternative."""

    html: str
    text: str


def _merge_fields() -> dict[str, frozenset[str]]:
    hints = typing.get_type_hints(MergeContext)
    return {
        root.name: frozenset(leaf.name for leaf in dataclasses.fields(hints[root.name]))
        for root in dataclasses.fields(MergeContext)
    }


_FIELDS: dict[str, frozenset[str]] = _merge_fields()

KNOWN_TAGS: tuple[str, ...] = tuple(
    sorted(f"{root}.{leaf}" for root, leaves in _FIELDS.items() for leaf in leaves)
)

ALLOWED_FILTERS: frozenset[str] = frozenset(
    {"capitalize", "d", "default", "e", "escape", "lower", "title", "trim", "upper"}
)
_FILTER_ALIASES: frozenset[str] = frozenset({"d", "escape"})  # same as default, e; not advertised
ALLOWED_TESTS: frozenset[str] = frozenset({"defined", "none", "undefined"})

# Node types that may appear anywhere; everything else needs explicit handling below.
_PASS_THROUGH_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.Const,
    nodes.Not,
    nodes.And,
    nodes.Or,
    nodes.CondExpr,
)

_REFUSED_NODES: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.For, "loops ({% for %})"),
    (nodes.Assign, "variable assignment ({% set %})"),
    (nodes.AssignBlock, "variable assignment ({% set %})"),
    (nodes.Import, "{% import %}"),
    (nodes.FromImport, "{% from ... import %}"),
    (nodes.Include, "{% include %}"),
    (nodes.Extends, "{% extends %}"),
    (nodes.Block, "{% block %}"),
    (nodes.Macro, "macros ({% macro %})"),
    (nodes.CallBlock, "{% call %} blocks"),
    (nodes.FilterBlock, "{% filter %} blocks"),
    (nodes.With, "{% with %} blocks"),
    (nodes.ScopedEvalContextModifier, "{% autoescape %} blocks"),
    (nodes.Call, "function or method calls"),
    (nodes.Compare, "comparisons"),
    (nodes.BinExpr, "arithmetic"),
    (nodes.UnaryExpr, "arithmetic"),
    (nodes.Concat, "string concatenation (~)"),
    (nodes.Literal, "list, tuple or dict literals"),
)


class _TemplateChecker:
    """Walk a jinja2 AST, collecting merge-tag names and reasons to refuse it."""

    def __init__(self) -> None:
        self.tags: set[str] = set()
        self.problems: list[str] = []

    def _refuse(self, reason: str) -> None:
        if reason not in self.problems:
            self.problems.append(reason)

    def visit(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Name | nodes.Getattr | nodes.Getitem):
            self._visit_reference(node)
        elif isinstance(node, nodes.Filter):
            self._visit_filter_or_test(node, "filter", ALLOWED_FILTERS)
        elif isinstance(node, nodes.Test):
            self._visit_filter_or_test(node, "test", ALLOWED_TESTS)
        elif isinstance(node, _PASS_THROUGH_NODES):
            self._visit_children(node)
        else:
            self._refuse(self._describe_refused(node))
            self._visit_children(node)

    def _visit_children(self, node: nodes.Node) -> None:
        for child in node.iter_child_nodes():
            self.visit(child)

    def _describe_refused(self, node: nodes.Node) -> str:
        if (
            isinstance(node, nodes.Call)
            and isinstance(node.node, nodes.Getattr)
            and node.node.attr in ("format", "format_map")
        ):
            return f"string formatting (.{node.node.attr}(...))"
        for node_type, description in _REFUSED_NODES:
            if isinstance(node, node_type):
                return description
        return f"the template construct '{type(node).__name__}'"

    def _visit_reference(self, node: nodes.Name | nodes.Getattr | nodes.Getitem) -> None:
        path: list[str] = []
        current: nodes.Node = node
        while True:
            if isinstance(current, nodes.Getattr):
                path.append(current.attr)
                current = current.node
            elif isinstance(current, nodes.Getitem):
                key = current.arg
                if not (isinstance(key, nodes.Const) and isinstance(key.value, str)):
                    if any(part.startswith("_") for part in path):
                        self._refuse("names starting with '_' (internal attributes)")
                    self._refuse("indexing with [...] other than a merge tag field name")
                    self.visit(key)
                    self.visit(current.node)
                    return
                path.append(key.value)
                current = current.node
            else:
                break
        path.reverse()
        if isinstance(current, nodes.Name):
            path.insert(0, current.name)
        if any(part.startswith("_") for part in path):
            self._refuse("names starting with '_' (internal attributes)")
        elif isinstance(current, nodes.Name) and current.ctx == "load":
            self.tags.add(".".join(path))
        if not isinstance(current, nodes.Name):
            self._refuse("attribute access on anything but a merge tag")
            self.visit(current)

    def _visit_filter_or_test(
        self, node: nodes.Filter | nodes.Test, kind: str, allowed: frozenset[str]
    ) -> None:
        if node.name not in allowed:
            self._refuse(f"the {kind} '{node.name}'")
        if node.kwargs or node.dyn_args is not None or node.dyn_kwargs is not None:
            self._refuse(f"keyword or * arguments to the {kind} '{node.name}'")
        for arg in node.args:
            if not isinstance(arg, nodes.Const):
                self._refuse(f"non-literal arguments to the {kind} '{node.name}'")
        self._visit_children(node)


def validate_template(source: str) -> None:
    """Check a (sanitized) signature template when it is saved.

    Raises :class:`TemplateSyntaxInvalid` (with line number) if it does not parse,
    :class:`UnsafeTemplate` if it uses anything outside the mail-merge subset and
    :class:`UnknownMergeTag` if it references tags that are not in :data:`KNOWN_TAGS`.
    """
    try:
        tree = _HTML_ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxInvalid(exc.message or "invalid template", exc.lineno) from exc
    checker = _TemplateChecker()
    checker.visit(tree)
    if checker.problems:
        raise UnsafeTemplate(
            "The signature uses template features that are not allowed: "
            + "; ".join(checker.problems)
            + ". Signatures may only contain merge tags such as {{ sender.first_name }}, the filters "
            + ", ".join(sorted(ALLOWED_FILTERS - _FILTER_ALIASES))
            + " (e.g. {{ sender.mobile|default('') }}) and {% if %} ... {% endif %} blocks."
        )
    unknown = tuple(sorted(checker.tags - set(KNOWN_TAGS)))
    if unknown:
        raise UnknownMergeTag(unknown, KNOWN_TAGS)


class _MergeUndefined(ChainableUndefined):
    """Missing merge values render as "", but a sandbox-refused attribute is an error.

    Plain ChainableUndefined would render ``'{0.__class__}'.format(sender)`` silently as an
    empty string; raising the sandbox's SecurityError instead lets us tell the user.
    """

    __slots__ = ()

    def _refused(self) -> bool:
        return isinstance(self._undefined_exception, type) and issubclass(
            self._undefined_exception, SecurityError
        )

    def __str__(self) -> str:
        if self._refused():
            self._fail_with_undefined_error()
        return super().__str__()

    def __iter__(self) -> Iterator[Any]:
        if self._refused():
            self._fail_with_undefined_error()
        return super().__iter__()

    def __bool__(self) -> bool:
        if self._refused():
            self._fail_with_undefined_error()
        return super().__bool__()


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _make_environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=autoescape,
        undefined=_MergeUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    # Defence in depth behind validate_template: no globals (range, lipsum, cycler, ...)
    # and only the allowed filters/tests exist at all.
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in ALLOWED_FILTERS}
    env.tests = {name: env.tests[name] for name in ALLOWED_TESTS}
    return env


_HTML_ENV = _make_environment(autoescape=True)
_TEXT_ENV = _make_environment(autoescape=False)


@functools.lru_cache(maxsize=256)
def _compile(source: str, autoescape: bool) -> Template:
    env = _HTML_ENV if autoescape else _TEXT_ENV
    return env.from_string(source)


def _render(source: str, ctx: MergeContext, autoescape: bool) -> str:
    try:
        template = _compile(source, autoescape)
        return template.render(sender=ctx.sender, company=ctx.company, account=ctx.account)
    except SecurityError as exc:
        raise UnsafeTemplate(
            "The signature tried to use something the template sandbox does not allow. "
            "Use only merge tags such as {{ sender.first_name }}."
        ) from exc
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxInvalid(exc.message or "invalid template", exc.lineno) from exc
    except TemplateError as exc:
        raise SignatureError(
            "The signature could not be filled in. Check its merge tags and filters and save it again."
        ) from exc
    except Exception as exc:
        raise SignatureError(
            "The signature could not be filled in because of an unexpected error. "
            "Check its merge tags and save it again."
        ) from exc


def prepare_signature_template(html: str) -> SanitizedSignature:
    """What to do when a user saves a signature: sanitize the HTML, then validate the tags.

    Sanitizing comes first so the merge tags are checked in exactly the text that is
    stored. Raises any :class:`~signatures.errors.SignatureError` subclass.
    """
    sanitized = sanitize_signature_html(html)
    validate_template(sanitized.html)
    return sanitized


def render_signature(template_html: str, ctx: MergeContext) -> RenderedSignature:
    """Render a signature template for one mail: HTML (escaped, re-sanitized) and text.

    The template is sanitized and validated again first, so a stored template that predates
    a tightening of the rules cannot bypass them. The text part is derived from the final
    HTML, so it shows merge values unescaped and links as ``text <url>``.
    """
    template = prepare_signature_template(template_html).html
    rendered = sanitize_rendered_signature_html(_render(template, ctx, autoescape=True))
    return RenderedSignature(html=rendered, text=html_to_text(rendered))


def render_text(template_text: str, ctx: MergeContext) -> str:
    """Render a plain-text signature template (no HTML escaping, no sanitizing).

    Validation is the same as for HTML templates; the result is meant for text/plain parts.
    """
    validate_template(template_text)
    return _render(template_text, ctx, autoescape=False)
