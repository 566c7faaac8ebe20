"""StatusService against the demo server, its conversion of a full snapshot, and discovery."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2 as jobs_pb
from pointillist.v1 import jobs_pb2_grpc as jobs_grpc
from pointillist.v1 import status_pb2 as status_pb
from pointillist.v1 import status_pb2_grpc as status_grpc
from scheduler.inventory import DeviceSnapshot, ProcessMemory
from scheduler.status import ModelQueueStatus, ReplicaStatus, SchedulerStatus
from server import conversion
from tests.holds import new_hold

GIB = 2**30


@pytest.fixture
def status_stub(channel: grpc.Channel) -> status_grpc.StatusServiceStub:
    return status_grpc.StatusServiceStub(channel)


def server_status(stub: status_grpc.StatusServiceStub) -> status_pb.GetServerStatusResponse:
    response: status_pb.GetServerStatusResponse = stub.GetServerStatus(
        status_pb.GetServerStatusRequest(), timeout=10
    )
    return response


def demo_model(status: status_pb.GetServerStatusResponse) -> status_pb.ModelQueueStatus:
    (model,) = [model for model in status.models if model.model == "demo"]
    return model


def test_server_status_lists_the_demo_replica_and_model(status_stub, demo_server):
    status = server_status(status_stub)

    assert not status.draining
    replicas = [replica for replica in status.replicas if replica.model == "demo"]
    assert replicas
    for replica in replicas:
        assert replica.id and replica.device_id == "cpu"
        assert replica.state == status_pb.REPLICA_STATE_READY
        assert replica.HasField("pid") and replica.pid > 0
        assert replica.memory_bytes > 0 and replica.running_jobs == 0
    model = demo_model(status)
    assert model.replicas == len(replicas)
    assert (model.queued_jobs, model.running_jobs) == (0, 0)
    assert model.footprint_measured and model.footprint_bytes > 0
    # Every replica's device is among the devices, when the scheduler reports devices.
    device_ids = {device.id for device in status.devices}
    assert not device_ids or {replica.device_id for replica in replicas} <= device_ids


def test_server_status_counts_running_and_queued_jobs(status_stub, channel, demo_server):
    jobs = jobs_grpc.JobServiceStub(channel)
    # Held after its first step (tests/holds.py): running until cancelled, on any machine.
    held = pb.GenerationParameters(prompt=new_hold("status").prompt, width=64, height=64, steps=4)
    long_id = jobs.SubmitJob(jobs_pb.SubmitJobRequest(parameters=held), timeout=10).job_id
    watch: Iterator[jobs_pb.WatchJobResponse] = jobs.WatchJob(
        jobs_pb.WatchJobRequest(job_id=long_id), timeout=120
    )
    next(event for event in watch if event.HasField("progress"))
    queued_id = jobs.SubmitJob(
        jobs_pb.SubmitJobRequest(parameters=pb.GenerationParameters(prompt="waits", steps=2)),
        timeout=10,
    ).job_id

    busy = server_status(status_stub)
    for job_id in (queued_id, long_id):
        jobs.CancelJob(jobs_pb.CancelJobRequest(job_id=job_id), timeout=30)
    watch.cancel()  # type: ignore[attr-defined]
    # A cancel reaches a running job at its next step: wait for both to end, then look.
    for job_id in (queued_id, long_id):
        demo_server.wait_job_finished(job_id)
    idle = server_status(status_stub)

    assert (demo_model(busy).running_jobs, demo_model(busy).queued_jobs) == (1, 1)
    assert sum(replica.running_jobs for replica in busy.replicas) == 1
    assert (demo_model(idle).running_jobs, demo_model(idle).queued_jobs) == (0, 0)
    assert demo_server.active_jobs() == []


def test_conversion_carries_every_field_of_a_gpu_snapshot():
    snapshot = SchedulerStatus(
        devices=(
            DeviceSnapshot(
                id="GPU-1234",
                kind="cuda",
                name="NVIDIA H100 80GB HBM3",
                total_bytes=80 * GIB,
                free_bytes=60 * GIB,
                used_bytes=20 * GIB,
                processes=(ProcessMemory(pid=4242, used_bytes=9 * GIB),),
                compute_capability=(9, 0),
                utilization_percent=37.5,
            ),
            DeviceSnapshot(
                id="cpu", kind="cpu", name="AMD EPYC", total_bytes=GIB, free_bytes=0, used_bytes=GIB
            ),
        ),
        replicas=(
            ReplicaStatus("sd35-0", "sd35", "GPU-1234", "busy", 4242, 9 * GIB, 2),
            ReplicaStatus("sd35-1", "sd35", "", "starting", None, 0, 0),
            ReplicaStatus("sd35-2", "sd35", "", "evicting", None, 0, 0),
        ),
        models=(
            ModelQueueStatus("sd35", 3, 2, 2, 9 * GIB, True),
            ModelQueueStatus("other", 0, 0, 0, None, False),
        ),
        draining=True,
    )

    message = conversion.server_status(snapshot)

    gpu, cpu = message.devices
    assert (gpu.id, gpu.kind) == ("GPU-1234", pb.DEVICE_KIND_CUDA)
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert (gpu.total_bytes, gpu.free_bytes, gpu.used_bytes) == (80 * GIB, 60 * GIB, 20 * GIB)
    assert (gpu.compute_capability.major, gpu.compute_capability.minor) == (9, 0)
    assert gpu.utilization_percent == 37.5
    assert [(p.pid, p.used_bytes) for p in gpu.processes] == [(4242, 9 * GIB)]
    assert cpu.kind == pb.DEVICE_KIND_CPU
    assert not cpu.HasField("compute_capability") and not cpu.HasField("utilization_percent")
    busy, starting, unknown = message.replicas
    assert (busy.state, busy.pid, busy.memory_bytes, busy.running_jobs) == (
        status_pb.REPLICA_STATE_BUSY,
        4242,
        9 * GIB,
        2,
    )
    assert starting.state == status_pb.REPLICA_STATE_STARTING and not starting.HasField("pid")
    assert unknown.state == status_pb.REPLICA_STATE_UNSPECIFIED
    sd35, other = message.models
    assert (sd35.queued_jobs, sd35.running_jobs, sd35.replicas) == (3, 2, 2)
    assert sd35.footprint_bytes == 9 * GIB and sd35.footprint_measured
    assert not other.HasField("footprint_bytes") and not other.footprint_measured
    assert message.draining


def test_health_and_reflection_know_the_new_services(channel):
    health = health_pb2_grpc.HealthStub(channel)
    named = health.Check(
        health_pb2.HealthCheckRequest(service="pointillist.v1.JobService"), timeout=10
    )
    assert named.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="pointillist.v1.JobService"),
    ]
    listing, files = list(reflection.ServerReflectionInfo(iter(requests), timeout=10))

    services = {service.name for service in listing.list_services_response.service}
    assert {"pointillist.v1.JobService", "pointillist.v1.StatusService"} <= services
    assert files.file_descriptor_response.file_descriptor_proto, files.error_response
