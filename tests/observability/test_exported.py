"""What an operator gets from ``pointillist serve`` configured the standard way: spans and
metrics over OTLP/gRPC to a real receiver on 127.0.0.1 (OTEL_EXPORTER_OTLP_ENDPOINT), a
Prometheus page on ``--metrics-port``, and JSON log lines (``--log-format json``).

The server runs in its own process, started with that environment, as an operator starts it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.otlp_receiver import OtlpReceiver
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.job import short_id

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-b7ad6b7169203331-01"),)
GENERATE = "/pointillist.v1.GenerationService/Generate"
STARTUP_TIMEOUT_S = 240.0


@dataclass
class ServedProcess:
    """``pointillist serve`` in a subprocess, its stderr read line by line as it comes."""

    process: subprocess.Popen[str]
    metrics_port: int
    receiver: OtlpReceiver
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    address: str = ""

    def read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_line(self, matches: Callable[[dict[str, Any]], bool], timeout: float) -> dict:
        """The first JSON log line that ``matches``, waiting for it up to ``timeout``."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [line for line in self.json_lines() if matches(line)]
            return bool(found) or self.process.poll() is not None

        with self.changed:
            self.changed.wait_for(seen, timeout)
        assert found, "\n".join(self.lines[-40:])
        return found[0]

    def wait_lines(
        self, matches: Callable[[dict[str, Any]], bool], count: int, timeout: float
    ) -> None:
        """Wait until ``count`` JSON log lines match."""
        with self.changed:
            self.changed.wait_for(
                lambda: len([line for line in self.json_lines() if matches(line)]) >= count,
                timeout,
            )

    def json_lines(self) -> list[dict[str, Any]]:
        # Worker processes share the stream with their own text lines; those are skipped.
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as page:
            text = page.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def served() -> Iterator[ServedProcess]:
    receiver = OtlpReceiver().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="pointillist-under-test",
        OTEL_BSP_SCHEDULE_DELAY="50",  # ms: spans leave at once, not after the default 5 s
        OTEL_METRIC_EXPORT_INTERVAL="500",
    )
    metrics_port = free_port()
    command = [
        sys.executable,
        "-m",
        "pointillist.cli",
        "serve",
        "--address",
        "127.0.0.1:0",
        "--model",
        "demo",
        "--device",
        "cpu",
        "--inventory",
        "cpu",
        "--metrics-port",
        str(metrics_port),
        "--log-format",
        "json",
        "--drain-grace",
        "10",
    ]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    served = ServedProcess(process, metrics_port, receiver)
    threading.Thread(target=served.read_stderr, daemon=True).start()
    try:
        listening = served.wait_line(
            lambda line: line["message"].startswith("listening on"), STARTUP_TIMEOUT_S
        )
        port = re.search(r"\(port (\d+)\)", listening["message"])
        assert port is not None
        served.address = f"127.0.0.1:{port.group(1)}"
        with grpc.insecure_channel(served.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=STARTUP_TIMEOUT_S
            )
            for answer in watch:
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    watch.cancel()
                    break
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
            receiver.stop()
    assert process.returncode == 0, "\n".join(served.lines[-40:])


def generate(served: ServedProcess, **params: Any) -> pb.GenerateResponse:
    with grpc.insecure_channel(
        served.address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        return pb_grpc.GenerationServiceStub(channel).Generate(
            pb.GenerateRequest(parameters=pb.GenerationParameters(**params)),
            metadata=TRACEPARENT,
            timeout=120,
        )


def test_spans_arrive_over_otlp_with_the_worker_phases_parented(served):
    response = generate(served, prompt="a lighthouse", width=64, height=64, steps=3)
    wanted = {GENERATE, "validate", "job", "queue_wait", "dispatch", "denoising", "vae_decode"}

    def arrived() -> bool:
        return wanted <= {span.name for span in traced_spans(served)}

    assert served.receiver.wait_for(arrived, timeout=30), served.receiver.spans()
    spans = {span.name: span for span in traced_spans(served) if span.name in wanted}
    job_attributes = {a.key: a.value for a in spans["job"].attributes}
    assert job_attributes["pointillist.job.id"].string_value == response.job_id
    assert spans["job"].parent_span_id == spans[GENERATE].span_id
    assert spans["dispatch"].parent_span_id == spans["job"].span_id
    assert spans["denoising"].parent_span_id == spans["dispatch"].span_id
    assert [e.name for e in spans["denoising"].events] == ["step"] * 3
    assert served.receiver.service_names() == {"pointillist-under-test"}


def traced_spans(served: ServedProcess) -> list[Any]:
    return [s for s in served.receiver.spans() if s.trace_id.hex() == TRACE_ID]


def test_metrics_arrive_over_otlp(served):
    generate(served, prompt="a fox", width=64, height=64, steps=2)
    wanted = {"pointillist.rpc.requests", "pointillist.step.duration", "pointillist.replicas"}
    assert served.receiver.wait_for(lambda: wanted <= served.receiver.metric_names(), timeout=30), (
        served.receiver.metric_names()
    )


def test_the_metrics_page_counts_what_was_sent(served):
    def refused(line: dict[str, Any]) -> bool:
        return line["message"] == "rpc finished" and line.get("code") == "INVALID_ARGUMENT"

    before = served.scrape()
    refused_before = len([line for line in served.json_lines() if refused(line)])
    generate(served, prompt="one", width=64, height=64, steps=2)
    generate(served, prompt="two", width=64, height=64, steps=3, num_images=2)
    with pytest.raises(grpc.RpcError):
        generate(served, prompt="", steps=2)
    # An abort sends its status before the handler unwinds to where the RPC is counted (and
    # logged, right after): wait for that line.
    served.wait_lines(refused, refused_before + 1, timeout=30)
    after = served.scrape()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    ok = {"rpc": GENERATE, "code": "OK"}
    bad = {"rpc": GENERATE, "code": "INVALID_ARGUMENT"}
    assert delta("pointillist_rpc_requests_total", **ok) == 2
    assert delta("pointillist_rpc_requests_total", **bad) == 1
    assert delta("pointillist_rpc_duration_seconds_count", **ok) == 2
    assert delta("pointillist_rpc_duration_seconds_count", **bad) == 1
    # Every bucket at or above +Inf holds every request; the histogram's sum is their time.
    assert delta("pointillist_rpc_duration_seconds_bucket", le="+Inf", **ok) == 2
    assert delta("pointillist_rpc_duration_seconds_sum", **ok) > 0
    assert delta("pointillist_step_duration_seconds_count", model="demo", device="cpu") == 5
    assert delta("pointillist_job_queue_wait_seconds_count", model="demo") == 2
    assert delta("pointillist_images_generated_total", model="demo") == 3
    assert delta("pointillist_jobs_total", model="demo", outcome="succeeded") == 2

    assert after[("pointillist_queue_depth", (("model", "demo"),))] == 0
    replicas = {
        dict(labels)["state"]: v for (n, labels), v in after.items() if n == "pointillist_replicas"
    }
    assert replicas.get("ready") == 1, replicas
    cpu = (("device", "cpu"), ("device_name", next(iter(device_names(after)))))
    total = after[("pointillist_device_memory_total_bytes", cpu)]
    free = after[("pointillist_device_memory_free_bytes", cpu)]
    assert total > 0
    assert 0 <= free <= total


def device_names(samples: dict) -> set[str]:
    return {
        dict(labels)["device_name"]
        for name, labels in samples
        if name == "pointillist_device_memory_total_bytes"
    }


def test_json_log_lines_carry_the_trace_and_job_ids(served):
    response = generate(served, prompt="a heron", width=64, height=64, steps=2)

    rpc_line = served.wait_line(
        lambda line: (
            line["message"] == "rpc finished" and line.get("job_id") == short_id(response.job_id)
        ),
        timeout=30,
    )
    assert rpc_line["rpc"] == GENERATE
    assert rpc_line["code"] == "OK"
    assert rpc_line["trace_id"] == TRACE_ID
    assert rpc_line["duration_ms"] > 0

    job_line = served.wait_line(
        lambda line: (
            line["message"] == "job finished" and line.get("job_id") == short_id(response.job_id)
        ),
        timeout=30,
    )
    assert job_line["trace_id"] == TRACE_ID
    assert job_line["outcome"] == "succeeded"
    assert job_line["level"] == "INFO"
    for timing in ("queue_wait_ms", "text_encoding_ms", "denoising_ms", "decoding_ms", "total_ms"):
        assert job_line[timing] >= 0, timing
    assert job_line["denoising_ms"] > 0
