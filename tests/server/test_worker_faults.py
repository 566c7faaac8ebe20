"""A worker killed mid-job: the job runs again on the restarted replica and still completes."""

from __future__ import annotations

import os
import signal

from pointillist.v1 import generation_pb2 as pb
from scheduler.job import JobState
from tests.holds import new_hold


def test_killed_worker_job_is_retried_and_completes(stub, demo_server):
    (replica,) = demo_server.scheduler.replicas("demo")
    pid_before = replica.pid
    # Held after step 1 (tests/holds.py), the job is surely mid-run when its worker is killed,
    # however fast the machine is. The hold is released when the retry starts (the first worker
    # is gone by then), so the retry runs through.
    hold = new_hold("survive")
    request = pb.StreamGenerateRequest(
        parameters=pb.GenerationParameters(
            prompt=hold.prompt, width=64, height=64, steps=4, seed=11
        )
    )
    events = []
    killed = False
    for event in stub.StreamGenerate(request, timeout=240):
        events.append(event)
        if event.HasField("progress") and not killed:
            os.kill(pid_before, signal.SIGKILL)
            killed = True
        if event.HasField("started") and killed:
            hold.release()

    kinds = [event.WhichOneof("event") for event in events]
    assert kinds.count("started") == 2, "the job starts again on the restarted replica"
    assert kinds[-1] == "result"
    job = demo_server.wait_job_finished(events[0].job_id)
    assert job.state is JobState.SUCCEEDED and job.attempts == 2
    assert replica.pid != pid_before
