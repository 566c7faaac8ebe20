"""A caller's trace continues through the server, the scheduler and the worker process down to
every denoising step: one real server (demo model, real worker), an in-memory span exporter."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc
from server.background import ServerThread
from server.telemetry import Telemetry
from tests.conftest import demo_settings
from tests.holds import new_hold

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"),)
WORKER_PHASES = ("text_encoding", "denoising", "vae_decode", "image_encoding")
GENERATE = "/pointillist.v1.GenerationService/Generate"
STREAM = "/pointillist.v1.GenerationService/StreamGenerate"


class CollectingExporter(SpanExporter):
    """Keeps finished spans and wakes whoever waits for one."""

    def __init__(self) -> None:
        self._spans: list[ReadableSpan] = []
        self._changed = threading.Condition()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._changed:
            self._spans.extend(spans)
            self._changed.notify_all()
        return SpanExportResult.SUCCESS

    def wait_for(
        self, condition: Callable[[list[ReadableSpan]], bool], timeout: float = 30.0
    ) -> list[ReadableSpan]:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self._spans), timeout), [
                s.name for s in self._spans
            ]
            return list(self._spans)

    def clear(self) -> None:
        with self._changed:
            self._spans.clear()


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[ServerThread, CollectingExporter]]:
    exporter = CollectingExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = ServerThread(demo_settings(), telemetry=Telemetry(tracer_provider=provider)).start()
    yield server, exporter
    server.stop()


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def in_trace(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [
        s for s in spans if s.context is not None and hex_id(s.context.trace_id, 32) == TRACE_ID
    ]


def rpc_done(rpc: str) -> Callable[[list[ReadableSpan]], bool]:
    return lambda spans: any(s.name == rpc for s in spans)


def by_name(spans: list[ReadableSpan]) -> dict[str, Any]:
    """Spans by name (typed loosely: their optional fields are all set once they ended)."""
    names = [s.name for s in spans]
    assert len(names) == len(set(names)), names
    return {s.name: s for s in spans}


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_the_whole_tree_down_to_each_step_is_under_the_callers_trace(traced):
    server, exporter = traced
    exporter.clear()
    steps = 4
    with server.channel() as channel:
        response = pb_grpc.GenerationServiceStub(channel).Generate(
            pb.GenerateRequest(
                parameters=pb.GenerationParameters(
                    prompt="a lighthouse", width=64, height=64, steps=steps, seed=11, num_images=2
                )
            ),
            metadata=TRACEPARENT,
            timeout=120,
        )
    spans = by_name(in_trace(exporter.wait_for(rpc_done(GENERATE))))

    assert set(spans) == {GENERATE, "validate", "job", "queue_wait", "dispatch", *WORKER_PHASES}
    rpc = spans[GENERATE]
    assert rpc.parent is not None and rpc.parent.is_remote
    assert hex_id(rpc.parent.span_id, 16) == CALLER_SPAN_ID
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert rpc.status.status_code is not StatusCode.ERROR
    for child in ("validate", "job"):
        assert parent_of(spans[child]) == span_id(rpc)
    for child in ("queue_wait", "dispatch"):
        assert parent_of(spans[child]) == span_id(spans["job"])
    dispatch = spans["dispatch"]
    for phase in WORKER_PHASES:  # recorded in the worker process, parented here
        assert parent_of(spans[phase]) == span_id(dispatch), phase
        assert dispatch.start_time <= spans[phase].start_time <= spans[phase].end_time
    order = [spans[phase] for phase in WORKER_PHASES]
    assert all(a.end_time <= b.start_time for a, b in itertools.pairwise(order))

    job = spans["job"].attributes
    assert job["pointillist.job.id"] == response.job_id
    assert (job["pointillist.model"], job["pointillist.width"], job["pointillist.height"]) == (
        "demo",
        64,
        64,
    )
    assert (job["pointillist.steps"], job["pointillist.images"]) == (steps, 2)
    assert job["pointillist.seed"] == "11"
    assert job["pointillist.job.outcome"] == "succeeded"
    assert spans["queue_wait"].attributes["pointillist.queue.position"] == 0
    assert dispatch.attributes["pointillist.replica.id"] == "demo-1"
    assert dispatch.attributes["pointillist.device.id"] == "cpu"
    assert dispatch.attributes["pointillist.batch_size"] == 1

    denoising = spans["denoising"]
    step_events = [event for event in denoising.events if event.name == "step"]
    assert [event.attributes["pointillist.step"] for event in step_events] == [1, 2, 3, 4]
    assert all(event.attributes["pointillist.step.duration_s"] > 0 for event in step_events)
    assert all(denoising.start_time <= e.timestamp <= denoising.end_time for e in step_events)
    assert denoising.attributes["pointillist.precision.transformer"] == "bf16/bf16"
    assert denoising.attributes["pointillist.replica.memory_bytes"] > 0
    assert spans["image_encoding"].attributes["format"] == "png"


def test_a_stream_and_a_submitted_job_are_traced_the_same_way(traced):
    server, exporter = traced
    with server.channel() as channel:
        for rpc in (STREAM, "/pointillist.v1.JobService/SubmitJob"):
            exporter.clear()
            params = pb.GenerationParameters(prompt="a fox", width=64, height=64, steps=2)
            if rpc == STREAM:
                stub = pb_grpc.GenerationServiceStub(channel)
                events = list(
                    stub.StreamGenerate(
                        pb.StreamGenerateRequest(parameters=params), metadata=TRACEPARENT
                    )
                )
                assert events[-1].HasField("result")
            else:
                jobs_pb2_grpc.JobServiceStub(channel).SubmitJob(
                    jobs_pb2.SubmitJobRequest(parameters=params), metadata=TRACEPARENT
                )
            # A submitted job outlives its RPC: its spans end when the job does.
            spans = exporter.wait_for(lambda s, rpc=rpc: rpc_done(rpc)(s) and rpc_done("job")(s))
            names = by_name(in_trace(spans))
            assert {rpc, "job", "dispatch", *WORKER_PHASES} <= set(names)
            assert parent_of(names["job"]) == span_id(names[rpc])
            assert parent_of(names["denoising"]) == span_id(names["dispatch"])


def test_a_refused_request_ends_its_spans_with_the_error(traced):
    server, exporter = traced
    exporter.clear()
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        pb_grpc.GenerationServiceStub(channel).Generate(
            pb.GenerateRequest(parameters=pb.GenerationParameters(prompt="", steps=2)),
            metadata=TRACEPARENT,
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    spans = by_name(in_trace(exporter.wait_for(rpc_done(GENERATE))))

    assert set(spans) == {GENERATE, "validate"}  # no job was made
    assert spans[GENERATE].status.status_code is StatusCode.ERROR
    assert (
        spans[GENERATE].attributes["rpc.grpc.status_code"]
        == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    )
    validate = spans["validate"]
    assert validate.status.status_code is StatusCode.ERROR
    (exception,) = [e for e in validate.events if e.name == "exception"]
    assert exception.attributes["exception.type"].endswith("InvalidRequestError")
    assert "prompt" in exception.attributes["exception.message"]


def test_a_cancelled_job_ends_its_job_span_with_the_cancellation(traced):
    server, exporter = traced
    exporter.clear()
    with server.channel() as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        call = stub.StreamGenerate(
            pb.StreamGenerateRequest(
                # Held after step 1 (tests.holds): still running when the caller leaves.
                parameters=pb.GenerationParameters(
                    prompt=new_hold("traced").prompt, width=64, height=64, steps=4
                )
            ),
            metadata=TRACEPARENT,
        )
        for event in call:
            if event.HasField("progress"):
                call.cancel()  # the caller leaves at the first step
                break
    spans = by_name(in_trace(exporter.wait_for(rpc_done("job"))))
    job = spans["job"]
    assert job.attributes["pointillist.job.outcome"] == "cancelled"
    assert job.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in job.events)


def test_without_a_configured_exporter_workers_are_sent_no_trace_context(demo_server):
    """Nothing configured (the shared server): no spans, and the worker records nothing."""
    with demo_server.channel() as channel:
        response = pb_grpc.GenerationServiceStub(channel).Generate(
            pb.GenerateRequest(parameters=pb.GenerationParameters(prompt="x", steps=2)),
            metadata=TRACEPARENT,
        )

    async def carrier() -> dict[str, str]:
        return dict(demo_server.scheduler.get_job(response.job_id).trace_context)

    assert demo_server.running.telemetry.tracer_provider is None
    assert demo_server.call(carrier()) == {}
