"""What a parse worker process runs: kept apart from `sync.pipeline` so that a worker imports
only the parser (~40 MiB), not the store, SQLAlchemy and the models the pipeline needs (~60 MiB
more per worker, against a 200 MiB budget for the whole process tree)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core import stages
from sync.parse import parse_message
from sync.types import ParsedMessage

ParseJob = tuple[int, bytes, datetime | None]  # uid, raw bytes, INTERNALDATE
Parsed = list[tuple[int, ParsedMessage]]


def parse_jobs(jobs: Sequence[ParseJob], fast: bool = True) -> Parsed:
    """Top-level (picklable) so a process pool can run it. `fast`: the `fast_parser` setting."""
    with stages.stage("parse.mime"):
        return [(uid, parse_message(raw, internal_date=when, fast=fast)) for uid, raw, when in jobs]
