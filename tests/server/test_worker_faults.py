"""Worker faults through a real server: a worker killed mid-job (the job runs again on the
restarted replica and completes), and a model that raises (a stable error, the text logged)."""

from __future__ import annotations

import logging
import os
import signal

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from engine.faults import FAIL_FAULT_ENV
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.job import JobState, short_id
from server.background import ServerThread
from tests.conftest import demo_settings
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


SECRET_PROMPT = "fail here, with /private/path/of/a/customer"


def test_a_model_failure_gives_a_stable_message_and_logs_the_text_with_the_job(caplog):
    settings = demo_settings(worker_env={FAIL_FAULT_ENV: SECRET_PROMPT})
    server = ServerThread(settings).start()
    try:
        with server.channel() as channel, caplog.at_level(logging.ERROR):
            call = pb_grpc.GenerationServiceStub(channel).StreamGenerate(
                pb.StreamGenerateRequest(
                    parameters=pb.GenerationParameters(prompt=SECRET_PROMPT, steps=2)
                ),
                timeout=120,
            )
            job_id = next(call).job_id
            with pytest.raises(grpc.RpcError) as failed:
                list(call)
            server.wait_job_finished(job_id)
    finally:
        server.stop()

    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "private" not in failed.value.details() and "injected" not in failed.value.details()
    status = rpc_status.from_call(failed.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "GENERATION_FAILED"
    logged = [r.getMessage() for r in caplog.records if short_id(job_id) in r.getMessage()]
    assert any("injected failure" in line and "private" in line for line in logged), logged
