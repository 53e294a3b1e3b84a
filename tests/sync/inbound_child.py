"""A listener in a process of its own that freezes right before or right after its commit (the
kill -9 tests end it there). Usage: python -m tests.sync.inbound_child PORT before|after MARKER"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from core.settings import get_settings
from sync.inbound import InboundServer
from tests.sync.inbound_harness import DOMAIN


def main() -> None:
    port, where, marker = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    settings = get_settings().model_copy(update={"inbound_domain": DOMAIN, "inbound_port": port})
    server = InboundServer(settings)

    def freeze() -> None:
        marker.write_text(where)
        time.sleep(3600)

    if where == "before":
        server.store.before_commit = freeze
    else:
        server.store.after_commit = freeze
    server.start()
    Path(f"{marker}.ready").write_text("ready")
    threading.Event().wait()


if __name__ == "__main__":
    main()
