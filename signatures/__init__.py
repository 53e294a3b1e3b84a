"""E-mail signatures with mail-merge tags: sanitizing, validating and rendering.

A pure service (no database, no I/O) shared by the CRM services and the HTTP API; the
public names are re-exported here so callers do not depend on the module layout.
"""

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
from signatures.sanitize import (
    SanitizedSignature,
    hold_remote_images,
    html_to_text,
    sanitize_mail_html,
    sanitize_signature_html,
)

__all__ = [
    "KNOWN_TAGS",
    "AccountInfo",
    "CompanyInfo",
    "InlineSvgRefused",
    "MergeContext",
    "RenderedSignature",
    "SanitizedSignature",
    "SenderInfo",
    "SignatureError",
    "TemplateSyntaxInvalid",
    "UnknownMergeTag",
    "UnsafeTemplate",
    "hold_remote_images",
    "html_to_text",
    "prepare_signature_template",
    "render_signature",
    "render_text",
    "sanitize_mail_html",
    "sanitize_signature_html",
    "validate_template",
]
