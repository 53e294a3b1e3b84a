"""Hosted forwarding addresses per team inbox (issue 13).

* `channels`: the admin's side (create, customize before activation, ticket defaults, the
  loop warning, provider confirmations, "send a test");
* `store`: what the SMTP/LMTP listener (sync/inbound.py) calls: resolve a recipient, and write
  one delivery through `crm.mailstore` in one transaction;
* `tickets`: a ticket per new conversation, the tickets view and report.
"""

from crm.forwarding.channels import (
    ChannelView,
    ConfirmationView,
    DeliveryView,
    TestView,
    activate,
    create_channel,
    dismiss_loop,
    get_channel,
    list_channels,
    list_confirmations,
    list_deliveries,
    pending_sender_requests,
    remove_smtp,
    request_sender,
    send_test,
    set_local_part,
    start_test,
    update_channel,
)
from crm.models import SenderName  # the sender-name choice, for the faces

__all__ = [
    "ChannelView",
    "ConfirmationView",
    "DeliveryView",
    "SenderName",
    "TestView",
    "activate",
    "create_channel",
    "dismiss_loop",
    "get_channel",
    "list_channels",
    "list_confirmations",
    "list_deliveries",
    "pending_sender_requests",
    "remove_smtp",
    "request_sender",
    "send_test",
    "set_local_part",
    "start_test",
    "update_channel",
]
