"""The user's part of a consent, done over HTTP as a browser would: open the provider's URL,
allow access as a user, and read where the provider sends the browser back."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def allow(authorization_url: str, username: str) -> str:
    """Submit the test provider's consent form as `username`: the callback URL it redirects to."""
    with urllib.request.urlopen(authorization_url, timeout=10) as page:  # the consent page loads
        assert b"Allow" in page.read()
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(authorization_url).query))
    form = urllib.parse.urlencode({**query, "username": username}).encode()
    base = authorization_url.split("?", 1)[0]
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(urllib.request.Request(base, data=form, method="POST"), timeout=10)
    except urllib.error.HTTPError as exc:
        with exc:  # closes the response's socket now
            if exc.code == 302:
                return str(exc.headers["Location"])
        raise
    raise AssertionError("the provider did not redirect")


def callback_params(callback_url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(callback_url).query))
