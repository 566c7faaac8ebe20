"""Watchers of one job are bounded (issue 14): past ``max_watchers_per_job`` WatchJob answers
RESOURCE_EXHAUSTED with RetryInfo and a QuotaFailure on the job. A real server, real channels;
the job is held (tests.holds) so every watch stays open."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc
from server.background import ServerThread
from tests.conftest import demo_settings
from tests.holds import new_hold


def test_one_watcher_too_many_is_refused_with_a_retry_delay():
    server = ServerThread(demo_settings(max_watchers_per_job=2)).start()
    hold = new_hold("watched")
    try:
        with server.channel() as channel:
            jobs = jobs_pb2_grpc.JobServiceStub(channel)
            parameters = pb.GenerationParameters(prompt=hold.prompt, width=64, height=64, steps=4)
            job_id = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(parameters=parameters)).job_id

            def watch() -> grpc.Call:
                call = jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=60)
                next(call)  # open: its first event (the history) arrived
                return call

            watchers = [watch(), watch()]
            try:
                watch()
            except grpc.RpcError as refused:
                error = refused
            else:
                raise AssertionError("a third watcher was let in")
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = rpc_status.from_call(error)
            assert status is not None
            retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
            assert status.details[0].Unpack(retry) and retry.retry_delay.ToNanoseconds() > 0
            assert status.details[1].Unpack(quota) and quota.violations[0].subject == "job"

            for call in watchers:
                call.cancel()
            jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=30)
    finally:
        server.stop()
