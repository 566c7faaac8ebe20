"""A worker whose socket is gone just as a batch is sent (issue 13, defect 5), with a real worker.

The batch's send can fail before the replica's reader has seen the socket close (the worker
died a moment earlier). That must be the replica's usual ``WorkerDiedError``, which the fleet
turns into a retry, not a bare ``ConnectionResetError`` from the drain, which ended the slot's
task and stranded its jobs RUNNING in no queue.
"""

from __future__ import annotations

import dataclasses

import pytest

from engine.config import demo_model_config
from scheduler.replica import Replica, WorkerDiedError
from tests.scheduler.test_fleet import STARTUP_S, WORKER_ENV, spec


async def test_a_batch_sent_on_a_socket_that_just_closed_raises_worker_died():
    config = dataclasses.replace(demo_model_config(), device="cpu")
    replica = Replica("demo-send", config, env=WORKER_ENV)
    await replica.start(STARTUP_S)
    try:
        # The connection drops with no chance for the reader to notice before the send:
        # exactly the state a worker that dies as the batch goes out leaves behind.
        writer = replica._writer
        assert writer is not None
        writer.transport.abort()
        assert not replica.exited.is_set()

        with pytest.raises(WorkerDiedError, match="is gone"):
            await replica.run_batch([("job-1", spec("lost?"), {})], lambda job_id, event: None)
    finally:
        await replica.kill()
