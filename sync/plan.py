"""Pure: what to do with one folder, from its saved cursor and what the server reports now.

IMAP identifies a message by (UIDVALIDITY, UID) (RFC 3501 2.3.1.1): UIDs only grow while
UIDVALIDITY stays the same, so "fetch UIDs above the highest seen" is a complete incremental sync.
When UIDVALIDITY changes every saved UID is void and the folder must be resynced (the store
re-keys known messages by Message-ID rather than importing them twice).

The cheap check: STATUS (MESSAGES UIDNEXT UIDVALIDITY [HIGHESTMODSEQ]) costs one command per
folder. If UIDNEXT, MESSAGES and HIGHESTMODSEQ (RFC 7162 CONDSTORE) are all unchanged since the
last completed pass, nothing was added, removed or re-flagged, and we do nothing.

Servers lie. A UIDVALIDITY of 0 or none makes UIDs meaningless: we refuse to sync that folder
rather than store keys that may collide later. A missing UIDNEXT just disables the shortcut. A
HIGHESTMODSEQ lower than the saved one is not trusted (the flags are rescanned in full).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sync.types import FolderStatus


class Action(enum.StrEnum):
    NOTHING = "nothing"  # folder unchanged since the last completed pass
    INITIAL = "initial"  # never synced (or cursor lost): fetch everything in the history window
    INCREMENTAL = "incremental"  # same UIDVALIDITY: fetch UIDs above the cursor, check expunges
    RESYNC = "resync"  # UIDVALIDITY changed: restart the cursor, re-key known mail
    FLAGGED = "flagged"  # UIDVALIDITY changes too often, or the folder is already flagged
    UNUSABLE = "unusable"  # the server gives no valid UIDVALIDITY


@dataclass(frozen=True, slots=True)
class SavedState:
    uidvalidity: int | None
    highest_uid: int
    uidnext: int | None
    messages: int | None
    highestmodseq: int | None
    uidvalidity_resyncs: int = 0
    unstable: bool = False
    initial_sync_done: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    action: Action
    uidvalidity: int | None = None
    fetch_above: int = 0
    # Compare the server's UIDs with ours after fetching, to notice expunged messages.
    check_expunged: bool = False
    # Fetch FLAGS changed since this modseq (CONDSTORE); None: no flag sync this pass.
    flags_since: int | None = None
    # The server's HIGHESTMODSEQ went backwards: rescan all flags, keep the saved value.
    full_flag_scan: bool = False
    reason: str = ""


def plan_folder(saved: SavedState | None, status: FolderStatus, *, max_resyncs: int) -> Plan:
    if not status.uidvalidity or status.uidvalidity < 0:
        return Plan(Action.UNUSABLE, reason=f"the server reports no valid UIDVALIDITY for {status.name}")
    if saved is None or saved.uidvalidity is None:
        return Plan(Action.INITIAL, uidvalidity=status.uidvalidity, reason="first sync")
    if saved.unstable:
        return Plan(
            Action.FLAGGED, reason="UIDVALIDITY kept changing; waiting for an admin to reset the folder"
        )
    if status.uidvalidity != saved.uidvalidity:
        if saved.uidvalidity_resyncs >= max_resyncs:
            return Plan(
                Action.FLAGGED, uidvalidity=status.uidvalidity, reason="UIDVALIDITY changed too often"
            )
        return Plan(
            Action.RESYNC,
            uidvalidity=status.uidvalidity,
            reason=f"UIDVALIDITY changed from {saved.uidvalidity} to {status.uidvalidity}",
        )
    if not saved.initial_sync_done:
        # A first sync that was interrupted: carry on from the last committed batch.
        return Plan(
            Action.INITIAL,
            uidvalidity=status.uidvalidity,
            fetch_above=saved.highest_uid,
            # Flags of mail stored before the interruption may have changed meanwhile.
            full_flag_scan=True,
            reason="resume",
        )

    modseq_backwards = bool(
        status.highestmodseq and saved.highestmodseq and status.highestmodseq < saved.highestmodseq
    )
    modseq_changed = bool(
        status.highestmodseq and saved.highestmodseq and status.highestmodseq > saved.highestmodseq
    )
    uidnext_known = bool(status.uidnext and status.uidnext > 0 and saved.uidnext)
    new_mail = not uidnext_known or (status.uidnext or 0) > (saved.uidnext or 0)
    count_changed = status.messages is None or saved.messages is None or status.messages != saved.messages
    if not (new_mail or count_changed or modseq_changed or modseq_backwards):
        return Plan(Action.NOTHING, uidvalidity=status.uidvalidity, reason="unchanged")
    return Plan(
        Action.INCREMENTAL,
        uidvalidity=status.uidvalidity,
        fetch_above=saved.highest_uid,
        check_expunged=count_changed or new_mail or modseq_backwards,
        flags_since=saved.highestmodseq if modseq_changed else None,
        full_flag_scan=modseq_backwards,
        reason="changed",
    )


def contiguous_done(batch: list[int], done: set[int], current: int) -> int:
    """The new cursor: the highest UID of `batch` (sorted) below which every UID is done."""
    cursor = current
    for uid in batch:
        if uid not in done:
            break
        cursor = max(cursor, uid)
    return cursor


def size_batches(
    uids: Sequence[int], sizes: Mapping[int, int], *, max_count: int, max_bytes: int, first: int = 0
) -> list[list[int]]:
    """Consecutive batches of at most `max_count` messages and `max_bytes` of RFC822.SIZE (a
    message larger than `max_bytes` alone), so memory follows the bytes of a batch rather than
    batch size times message size. Unknown sizes count as 0.

    `first`: the first batch holds at most this many messages. Fetching, parsing and storing
    overlap batch by batch, so the first store waits for one batch fetched and parsed: a small
    one starts it sooner. Only the first: every batch costs the store a fixed amount on top of
    its messages (tens of ms), which a ramp of several small batches would not pay back."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    cap = min(max_count, first) if first > 0 else max_count
    for uid in uids:
        size = max(sizes.get(uid, 0), 0)
        if current and (len(current) >= cap or total + size > max_bytes):
            batches.append(current)
            current, total, cap = [], 0, max_count
        current.append(uid)
        total += size
    if current:
        batches.append(current)
    return batches
