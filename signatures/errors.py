"""Errors raised by the signature service.

Every error derives from :class:`SignatureError` so callers (CRM services, the HTTP API)
can catch one type and show ``str(exc)`` to the user. The messages are therefore written
as complete, actionable sentences for the person editing the signature: they say what is
wrong and what to do instead, and never expose a raw jinja2 or bleach traceback.
"""

from __future__ import annotations


class SignatureError(Exception):
    """Root of all signature errors; ``str(exc)`` is safe to show to the user."""


class InlineSvgRefused(SignatureError):
    """The signature HTML contains an inline ``<svg>`` element."""

    def __init__(self) -> None:
        super().__init__(
            "Inline SVG graphics cannot be used in a signature because many mail clients "
            "(Gmail, Outlook) do not show inline SVG. Save the graphic as a PNG image, host it "
            "on a web server and insert it as an image by its https:// URL instead."
        )


class UnknownMergeTag(SignatureError):
    """The template uses merge tags that do not exist.

    ``unknown`` holds the offending dotted names, ``known`` every valid merge tag.
    """

    def __init__(self, unknown: tuple[str, ...], known: tuple[str, ...]) -> None:
        self.unknown = unknown
        self.known = known
        noun, pronoun = ("merge tag", "it") if len(unknown) == 1 else ("merge tags", "them")
        unknown_list = ", ".join("{{ " + tag + " }}" for tag in unknown)
        known_list = ", ".join("{{ " + tag + " }}" for tag in known)
        super().__init__(
            f"The signature uses the unknown {noun} {unknown_list}. "
            f"Replace {pronoun} with one of the available merge tags: {known_list}."
        )


class UnsafeTemplate(SignatureError):
    """The template uses a construct outside the allowed mail-merge subset."""


class TemplateSyntaxInvalid(SignatureError):
    """The template cannot be parsed; ``lineno`` is the 1-based line of the error."""

    def __init__(self, detail: str, lineno: int | None) -> None:
        self.detail = detail
        self.lineno = lineno
        where = f" on line {lineno}" if lineno else ""
        super().__init__(
            f"The signature template has a syntax error{where}: {detail.rstrip('.')}. "
            "Check that every '{{' is closed by '}}' and every '{% if %}' by '{% endif %}'."
        )
