"""`crm-inbox account connect` and `account disconnect`: mailboxes connected by OAuth2 consent.

`connect` listens on a loopback port for the provider's redirect (RFC 8252 7.3: loopback
redirect for native apps), prints the URL to open, waits for the callback, then connects the
mailbox exactly as the web page does (`sync.oauth_flow`). The consent is bound to a secret
that only this process holds, so a callback for another process's consent is refused.
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Annotated, Any
from urllib.parse import parse_qs, urlparse

import typer

from core.caller import Caller
from core.db import session_scope
from core.secrets import SecretBox
from core.settings import get_settings
from crm_inbox.cli.common import JsonOpt, TenantOpt, emit, fail, operator, out, print_json, say
from sync import oauth_flow
from sync.oauth import DeviceCode

_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>crm-inbox</title>"
    b"<p>Thank you. You can close this window and return to the terminal.</p>"
)


class _Callback:
    """The first callback that carries our state (anything else, a favicon, is ignored)."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.params: dict[str, str] | None = None
        self.arrived = threading.Event()


def _server(port: int, waiting: _Callback) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != "/callback" or params.get("state") != waiting.state:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(_PAGE)
            if waiting.params is None:
                waiting.params = params
                waiting.arrived.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request line holds the authorization code: never printed

    return HTTPServer(("127.0.0.1", port), Handler)


def _connect_with_device(caller: Caller, provider: str, account: int | None, as_json: bool) -> None:
    def show(code: DeviceCode) -> None:
        out.print(
            f"On any device, open {code.verification_uri} and enter the code {code.user_code}",
            highlight=False,
        )
        if code.verification_uri_complete:
            out.print(f"(or open {code.verification_uri_complete})", highlight=False, soft_wrap=True)
        out.print("Waiting for the sign-in ...", highlight=False)
        out.file.flush()

    result = oauth_flow.connect_with_device(
        sessions=session_scope,
        caller=caller,
        provider=provider,
        box=SecretBox.from_settings(),
        show=show,
        account_id=account,
    )
    view = result.account
    checked = f": {result.check.message}" if result.check else ""
    emit(as_json, result, f"Account {view.id} ({view.email}) connected with {provider}{checked}")


def register(account_app: typer.Typer) -> None:
    @account_app.command("connect")
    def account_connect(
        provider: Annotated[str, typer.Option(help="google, microsoft, or a configured provider's name.")],
        account: Annotated[
            int | None, typer.Option("--account", help="Reconnect this account (default: a new mailbox).")
        ] = None,
        port: Annotated[int, typer.Option(help="Loopback port for the callback (0: any free port).")] = 0,
        timeout: Annotated[
            float | None,
            typer.Option(help="Seconds to wait for the consent (default: the state's lifetime)."),
        ] = None,
        device: Annotated[
            bool,
            typer.Option(
                "--device",
                help="Sign in on another device with a code (providers with device authorization, "
                "e.g. Microsoft 365) instead of a browser on this machine.",
            ),
        ] = False,
        tenant: TenantOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Connect a mailbox by signing in at its provider: prints the URL to open, waits for the
        provider to send the browser back here, checks the login over IMAP, saves the account."""
        settings = get_settings()
        with session_scope() as session:
            caller = operator(session, tenant)
        if device:
            _connect_with_device(caller, provider, account, as_json)
            return
        binding = secrets.token_urlsafe(32)
        box = SecretBox.from_settings(settings)
        placeholder = _Callback("")
        httpd = _server(port, placeholder)
        redirect_uri = f"http://127.0.0.1:{httpd.server_address[1]}/callback"
        serving = False
        try:
            started = oauth_flow.start(
                sessions=session_scope,
                caller=caller,
                provider=provider,
                redirect_uri=redirect_uri,
                binding=binding,
                box=box,
                settings=settings,
                account_id=account,
            )
            placeholder.state = started.state
            thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            thread.start()
            serving = True
            out.print("Open this URL in a browser and allow access:", highlight=False)
            out.print(started.authorization_url, highlight=False, soft_wrap=True)
            out.print(f"Waiting for the provider to return to {redirect_uri} ...", highlight=False)
            out.file.flush()
            if not placeholder.arrived.wait(timeout or settings.oauth_state_seconds):
                raise fail("no answer from the provider in time; run the command again.")
        finally:
            if serving:
                httpd.shutdown()
            httpd.server_close()
        params = placeholder.params or {}
        result = oauth_flow.complete(
            sessions=session_scope,
            caller=caller,
            state=params.get("state", ""),
            code=params.get("code"),
            error=params.get("error"),
            binding=binding,
            box=box,
            settings=settings,
        )
        view = result.account
        checked = f": {result.check.message}" if result.check else ""
        emit(as_json, result, f"Account {view.id} ({view.email}) connected with {provider}{checked}")

    @account_app.command("disconnect")
    def account_disconnect(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
        """Revoke an OAuth mailbox's tokens at its provider (when it can) and forget them; the
        account keeps its mail and waits to be connected again."""
        with session_scope() as session:
            caller = operator(session, tenant)
        result = oauth_flow.disconnect(
            sessions=session_scope, caller=caller, account_id=account_id, box=SecretBox.from_settings()
        )
        if as_json:
            print_json(result)
            return
        if result.revoked:
            say(f"Account {account_id} disconnected; {result.provider} revoked its tokens.")
        elif result.revocation_supported:
            say(f"Account {account_id} disconnected; {result.provider} could not be reached to revoke.")
        else:
            say(
                f"Account {account_id} disconnected. {result.provider} has no revocation endpoint: remove "
                "crm-inbox's access in the account's security settings at the provider."
            )
