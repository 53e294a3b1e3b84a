"""The one HTML-to-text extractor (`core.html_text`): both styles, same bounds."""

from __future__ import annotations

import pytest

from core.html_text import COMPOSED, READING, TextStyle, html_to_text

SOURCE = '<p>Hi</p><ul><li>one</li><li>two</li></ul><p><a href="https://x.test/">site</a></p>'


def test_reading_style_is_what_received_mail_shows() -> None:
    assert html_to_text(SOURCE) == "Hi\n\none\ntwo\n\nsite"


def test_composed_style_writes_bullets_and_links() -> None:
    assert html_to_text(SOURCE, COMPOSED) == "Hi\n- one\n- two\nsite <https://x.test/>"


@pytest.mark.parametrize("style", [READING, COMPOSED])
def test_unterminated_markup_stays_cheap_in_both_styles(style: TextStyle) -> None:
    assert html_to_text("<p>visible</p>" + "<!--" * 100_000, style) == "visible"
