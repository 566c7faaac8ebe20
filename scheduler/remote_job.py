"""A job another server runs, as this server sees it: a ``Job`` fed from the shared job store.

Everything that reads a job (WatchJob, GetJob, CancelJob waiting for the end, a flight member
replaying a run) reads a ``RemoteJob`` exactly as a local one, because it is one: each entry of
the job's stream is published into it as the owner published it. Its times come from the stream's
entry ids (Redis's clock, in milliseconds), so a late reader sees when things happened, not when it
read them.
"""

from __future__ import annotations

import logging

from engine.job import GenerationOutput
from scheduler.errors import JobFailedError
from scheduler.job import Job, Started, short_id
from scheduler.job_event_codec import JobRecord, decode_end, decode_event, local
from scheduler.result_codec import CorruptEntryError

log = logging.getLogger("pointillist.job_store")

FIRST_ENTRY = "0-0"


class RemoteJob(Job):
    """The job ``record`` names, owned by the server ``record.owner``."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(record.spec, priority=record.priority, caller=record.caller)
        self.id = record.job_id
        self.submitted_at = record.submitted_at
        self.owner = record.owner
        self.last_entry = FIRST_ENTRY  # the stream id read last: the next read starts after it
        self.ended = False  # the stream's end entry was read (later entries are ignored)

    def replay(self, entry_id: str, kind: str, data: bytes) -> None:
        """Publish one stream entry (the record itself, first, carries nothing new)."""
        self.last_entry = entry_id
        if self.ended or kind == "record":
            return
        at = local(int(entry_id.split("-")[0]) / 1000)
        try:
            if kind == "end":
                self._end(data)
                return
            event = decode_event(kind, data)
        except CorruptEntryError as exc:
            log.warning(
                "job %s: unreadable %s entry in the job store: %s", short_id(self.id), kind, exc
            )
            self.ended = True
            self.fail(JobFailedError("the shared job store holds an entry this server cannot read"))
            return
        self.publish(event)
        if isinstance(event, Started):
            self.started_at = at
        elif isinstance(event, GenerationOutput):
            self.finished_at = at

    def _end(self, data: bytes) -> None:
        end = decode_end(data)
        self.ended = True
        self.cancel_requested = end.cancel_requested
        if not self.state.finished:
            self.fail(end.error or JobFailedError("the job ended without a result"), end.state)
            self.finished_at = end.finished_at
