"""The folder planner and the folder picker are pure: tested from tables."""

from __future__ import annotations

import pytest

from sync import errors
from sync.folders import pick_folders
from sync.netguard import address_problem
from sync.plan import Action, SavedState, contiguous_done, plan_folder, size_batches
from sync.types import FolderInfo, FolderRole, FolderStatus


def saved(
    *,
    uidvalidity: int | None = 7,
    highest_uid: int = 10,
    uidnext: int | None = 11,
    messages: int | None = 10,
    highestmodseq: int | None = 50,
    uidvalidity_resyncs: int = 0,
    unstable: bool = False,
    initial_sync_done: bool = True,
) -> SavedState:
    return SavedState(
        uidvalidity=uidvalidity,
        highest_uid=highest_uid,
        uidnext=uidnext,
        messages=messages,
        highestmodseq=highestmodseq,
        uidvalidity_resyncs=uidvalidity_resyncs,
        unstable=unstable,
        initial_sync_done=initial_sync_done,
    )


def status(
    *,
    name: str = "INBOX",
    uidvalidity: int | None = 7,
    uidnext: int | None = 11,
    messages: int | None = 10,
    highestmodseq: int | None = 50,
) -> FolderStatus:
    return FolderStatus(
        name=name, uidvalidity=uidvalidity, uidnext=uidnext, messages=messages, highestmodseq=highestmodseq
    )


@pytest.mark.parametrize(
    ("saved_state", "server", "action"),
    [
        (None, status(), Action.INITIAL),
        (saved(uidvalidity=None), status(), Action.INITIAL),
        (saved(), status(), Action.NOTHING),
        (saved(), status(uidnext=12, messages=11), Action.INCREMENTAL),
        (saved(), status(messages=9), Action.INCREMENTAL),  # expunge
        (saved(), status(highestmodseq=51), Action.INCREMENTAL),  # flags changed
        (saved(), status(uidvalidity=8), Action.RESYNC),
        (saved(uidvalidity_resyncs=5), status(uidvalidity=8), Action.FLAGGED),
        (saved(unstable=True), status(), Action.FLAGGED),
        (saved(), status(uidvalidity=0), Action.UNUSABLE),
        (saved(), status(uidvalidity=None), Action.UNUSABLE),
        (saved(initial_sync_done=False), status(), Action.INITIAL),
        # No UIDNEXT from the server: the shortcut is off, search instead.
        (saved(), status(uidnext=None), Action.INCREMENTAL),
        (saved(), status(uidnext=0), Action.INCREMENTAL),
        # Without CONDSTORE the modseq is simply not compared.
        (saved(highestmodseq=None), status(highestmodseq=None), Action.NOTHING),
    ],
)
def test_plan_actions(saved_state: SavedState | None, server: FolderStatus, action: Action) -> None:
    assert plan_folder(saved_state, server, max_resyncs=5).action is action


def test_plan_incremental_fetches_above_cursor_and_flags_since() -> None:
    plan = plan_folder(saved(), status(uidnext=15, highestmodseq=60), max_resyncs=5)
    assert plan.fetch_above == 10 and plan.flags_since == 50 and not plan.full_flag_scan


def test_plan_modseq_going_backwards_is_not_trusted() -> None:
    plan = plan_folder(saved(), status(highestmodseq=3), max_resyncs=5)
    assert plan.action is Action.INCREMENTAL and plan.full_flag_scan and plan.flags_since is None


def test_plan_interrupted_first_sync_resumes_after_cursor() -> None:
    plan = plan_folder(saved(initial_sync_done=False, highest_uid=400), status(), max_resyncs=5)
    assert plan.fetch_above == 400


@pytest.mark.parametrize(
    ("batch", "done", "current", "expected"),
    [
        ([1, 2, 3], {1, 2, 3}, 0, 3),
        ([1, 2, 3], {1, 3}, 0, 1),
        ([5, 6, 7], {6, 7}, 4, 4),
        ([], set(), 9, 9),
    ],
)
def test_contiguous_done(batch: list[int], done: set[int], current: int, expected: int) -> None:
    assert contiguous_done(batch, done, current) == expected


def f(name: str, *flags: str, delim: str = "/") -> FolderInfo:
    return FolderInfo(name=name, delimiter=delim, flags=flags)


@pytest.mark.parametrize(
    ("folders", "sent"),
    [
        ([f("INBOX"), f("Sent", "\\Sent")], "Sent"),
        ([f("INBOX"), f("Envoyés"), f("Archive", "\\Sent")], "Archive"),  # SPECIAL-USE wins
        ([f("INBOX"), f("Sent Items")], "Sent Items"),
        ([f("INBOX"), f("[Gmail]", "\\Noselect"), f("[Gmail]/Sent Mail")], "[Gmail]/Sent Mail"),
        ([f("INBOX"), f("Éléments envoyés")], "Éléments envoyés"),
        ([f("INBOX"), f("Gesendete Elemente")], "Gesendete Elemente"),
        ([f("INBOX"), f("Enviados")], "Enviados"),
        ([f("INBOX", delim="."), f("INBOX.Sent", delim=".")], "INBOX.Sent"),
        ([f("INBOX"), f("Projects/Sent")], None),  # a subfolder is never Sent
        ([f("INBOX"), f("Drafts", "\\Drafts")], None),
    ],
)
def test_pick_folders(folders: list[FolderInfo], sent: str | None) -> None:
    picked = pick_folders(folders)
    assert picked[FolderRole.INBOX] == "INBOX"
    assert picked.get(FolderRole.SENT) == sent
    assert set(picked) <= {FolderRole.INBOX, FolderRole.SENT}


def test_pick_folders_inbox_is_case_insensitive_and_required() -> None:
    assert pick_folders([f("Inbox")])[FolderRole.INBOX] == "Inbox"
    with pytest.raises(errors.InboxMissing, match="no INBOX"):
        pick_folders([f("Sent", "\\Sent")])


@pytest.mark.parametrize(
    ("address", "allow_private", "blocked"),
    [
        ("169.254.169.254", True, True),
        ("::ffff:169.254.169.254", True, True),
        ("fd00:ec2::254", True, True),
        ("127.0.0.1", False, True),
        ("127.0.0.1", True, False),
        ("10.1.2.3", False, True),
        ("192.168.1.1", False, True),
        ("::1", False, True),
        ("fe80::1", False, True),
        ("169.254.170.2", True, True),  # link-local (ECS credentials): blocked even when private is allowed
        ("0.0.0.0", True, True),
        ("93.184.216.34", False, False),
        # IPv4 carried in IPv6 (issue 12.14): 6to4 and Teredo unwrapped like IPv4-mapped.
        ("2002:7f00:1::", False, True),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", True, True),  # 6to4 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:5601:5601", True, True),  # Teredo client 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:80fe:fffe", False, True),  # Teredo client 127.1.0.1
        ("2002:5db8:d822::", False, False),  # 6to4 of a public address
    ],
)
def test_address_guard(address: str, allow_private: bool, blocked: bool) -> None:
    assert (address_problem(address, allow_private=allow_private) is not None) is blocked


@pytest.mark.parametrize(
    ("sizes", "max_count", "max_bytes", "expected"),
    [
        ({1: 10, 2: 10, 3: 10}, 200, 25, [[1, 2], [3]]),
        ({1: 10, 2: 10, 3: 10}, 2, 1000, [[1, 2], [3]]),
        ({1: 5, 2: 100, 3: 5}, 200, 50, [[1], [2], [3]]),  # too big alone: a batch of its own
        ({}, 2, 10, [[1, 2], [3]]),  # unknown sizes: by count
    ],
)
def test_size_batches(
    sizes: dict[int, int], max_count: int, max_bytes: int, expected: list[list[int]]
) -> None:
    assert size_batches([1, 2, 3], sizes, max_count=max_count, max_bytes=max_bytes) == expected


@pytest.mark.parametrize(
    ("count", "expected"),
    [(10, [10]), (50, [50]), (51, [50, 1]), (835, [50, 200, 200, 200, 185])],
)
def test_size_batches_first_batch_is_smaller(count: int, expected: list[int]) -> None:
    uids = list(range(1, count + 1))
    batches = size_batches(uids, {}, max_count=200, max_bytes=10**9, first=50)
    assert [len(b) for b in batches] == expected
    assert [uid for b in batches for uid in b] == uids  # every UID once, in order


def test_size_batches_first_batch_keeps_the_byte_bound_and_small_counts() -> None:
    uids = list(range(1, 101))
    by_bytes = size_batches(uids, dict.fromkeys(uids, 10), max_count=200, max_bytes=200, first=50)
    assert [len(b) for b in by_bytes] == [20] * 5
    # A batch size under the first batch's is left as it is (tests use batches of 2 to 7).
    assert size_batches(uids, {}, max_count=7, max_bytes=10**9, first=50) == size_batches(
        uids, {}, max_count=7, max_bytes=10**9
    )
