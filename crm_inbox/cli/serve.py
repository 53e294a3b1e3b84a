"""`crm-inbox serve`: the HTTP API and the web page, with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from crm_inbox.cli.common import out


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8025,
) -> None:
    """Serve the shared inbox (web page and HTTP API) until Ctrl-C."""
    import uvicorn

    from inbox_api.app import create_app

    out.print(f"Shared inbox at http://{host}:{port}/ (API schema at /openapi.json)")
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", proxy_headers=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
