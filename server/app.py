"""Builds and runs the gRPC server: generation service, health, reflection, graceful drain."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc, status_pb2, status_pb2_grpc
from scheduler.caching_scheduler import CachingScheduler
from scheduler.cpu_inventory import CpuInventory
from scheduler.fleet import FleetScheduler
from scheduler.interface import Scheduler
from scheduler.inventory import DeviceInventory
from scheduler.nvml_inventory import InventoryError, NvmlInventory
from scheduler.shared_jobs import SharedJobSpace
from scheduler.simulated_inventory import load_inventory
from server import auth, caller_identity
from server.caller_limits import StreamLimiter
from server.connection_age import connection_age_options
from server.health import CapacityHealth, HealthServicer
from server.job_servicer import JobServicer
from server.malformed_requests import MalformedRequestInterceptor
from server.open_streams import OpenStreamCloser
from server.servicer import GenerationServicer
from server.settings import ServerSettings
from server.status_servicer import StatusServicer
from server.storage import build_output_publisher, build_result_store
from server.telemetry import Telemetry, metrics_host
from server.tls import server_credentials
from server.web_server import WebServer, WebTls, start_web_server

log = logging.getLogger("pointillist.server")

GENERATION_SERVICE = pb.DESCRIPTOR.services_by_name["GenerationService"].full_name
JOB_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
STATUS_SERVICE = status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name


@dataclass
class RunningServer:
    """A started server. ``ready`` finishes once every model has a warm replica (or failed);
    from then on ``health`` follows capacity (``server.health``)."""

    server: grpc.aio.Server
    port: int
    scheduler: Scheduler
    health: CapacityHealth
    ready: asyncio.Task[None]
    telemetry: Telemetry
    # The result cache in front of ``scheduler`` (what the generation and job services use).
    results: CachingScheduler | None = None
    web: WebServer | None = None
    """The browser port, when ``settings.web_address`` is set."""
    open_streams: OpenStreamCloser = field(default_factory=OpenStreamCloser)
    """Ends the open-ended Health Watch and reflection streams at shutdown."""
    jobs: JobServicer | None = None
    """The job service (its shared envelopes and output store, for tests and benchmarks)."""

    async def drain(self, grace_s: float) -> None:
        """Go NOT_SERVING, let accepted jobs finish within ``grace_s``, then stop everything."""
        log.info("draining: up to %.0fs for accepted jobs", grace_s)
        self.ready.cancel()
        await asyncio.gather(self.ready, return_exceptions=True)
        await self.health.drain()
        await (self.results or self.scheduler).drain(grace_s)
        if self.web is not None:
            await self.web.stop()
        # Jobs are over; the short grace lets their last messages reach the callers. Health
        # Watch and reflection streams never end by themselves: end them, not grpc's stop.
        self.open_streams.close()
        await self.server.stop(grace=2.0)
        self.telemetry.shutdown()
        log.info("stopped")


def build_scheduler(settings: ServerSettings) -> Scheduler:
    return FleetScheduler(
        list(settings.models),
        open_inventory(settings.inventory),
        settings.scheduler,
        default_model=settings.default_model,
    )


def open_inventory(spec: str) -> DeviceInventory:
    """``auto``: the GPUs when NVML answers with at least one, else the host's CPU."""
    if spec != "auto":
        return load_inventory(spec)
    try:
        gpus = NvmlInventory()
    except InventoryError as exc:
        log.info("no GPU inventory (%s): serving on the CPU", exc)
        return CpuInventory()
    if gpus.snapshot():
        return gpus
    gpus.close()
    return CpuInventory()


async def create_server(
    settings: ServerSettings,
    scheduler: Scheduler | None = None,
    telemetry: Telemetry | None = None,
) -> RunningServer:
    """Bind ``settings.address`` (port 0 picks a free port), start serving and warming replicas.

    Health answers NOT_SERVING until every model has a warm replica, then follows capacity
    (see ``server.health`` for what each service name reports).
    ``telemetry`` defaults to what the OTEL_* variables and ``settings.metrics_port`` ask for.
    """
    scheduler = scheduler or build_scheduler(settings)
    telemetry = telemetry or Telemetry.from_environment(
        settings.metrics_port, metrics_host(settings.address)
    )
    open_streams = OpenStreamCloser()
    server = grpc.aio.server(
        # Tracing outermost, so refused calls are traced and counted too.
        interceptors=[
            *telemetry.interceptors(),
            *auth.interceptors(settings.api_keys),
            *caller_identity.interceptors(settings.trusted_proxies),
            MalformedRequestInterceptor(),
            open_streams,
        ],
        options=[
            ("grpc.max_receive_message_length", settings.request_limit()),
            ("grpc.max_send_message_length", settings.max_response_bytes),
            *connection_age_options(settings.max_connection_age_s),
        ],
    )
    shared = None
    if settings.job_store != "memory":
        shared = SharedJobSpace(
            settings.job_store,
            lease_s=settings.job_lease_s,
            retention_s=settings.scheduler.job_retention_s,
        )
    results = CachingScheduler(
        scheduler,
        build_result_store(settings),
        settings.scheduler.job_retention_s,
        settings.scheduler.job_history_max_mib,
        shared,
    )
    outputs = build_output_publisher(settings)
    streams = StreamLimiter(settings.max_streams_per_caller)
    generation, jobs, status = (
        GenerationServicer(results, outputs, telemetry.jobs, streams),
        JobServicer(
            results,
            outputs=outputs,
            telemetry=telemetry.jobs,
            streams=streams,
            watchers=StreamLimiter(settings.max_watchers_per_job, what="watchers", subject="job"),
        ),
        StatusServicer(scheduler),
    )
    pb_grpc.add_GenerationServiceServicer_to_server(generation, server)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    status_pb2_grpc.add_StatusServiceServicer_to_server(status, server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health = CapacityHealth(
        health_servicer,
        scheduler,
        capacity=("", GENERATION_SERVICE),
        warm=(JOB_SERVICE,),
        up=(STATUS_SERVICE,),
    )
    if settings.reflection:
        reflection.enable_server_reflection(
            (
                GENERATION_SERVICE,
                JOB_SERVICE,
                STATUS_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    if credentials is None:
        port = server.add_insecure_port(settings.address)
    else:
        port = server.add_secure_port(settings.address, credentials)
    running = RunningServer(
        server,
        port,
        scheduler,
        health,
        ready=asyncio.create_task(asyncio.sleep(0)),
        telemetry=telemetry,
        results=results,
        open_streams=open_streams,
        jobs=jobs,
    )
    if shared is not None:  # before serving: a job accepted from now on is shared
        await shared.start(
            lambda job_id, deadline: results.cancel(job_id, deadline_exceeded=deadline)
        )
    await health.starting()
    telemetry.start(scheduler.status, asyncio.get_running_loop())
    await server.start()
    if settings.web_address is not None:
        running.web = await start_web_server(
            settings.web_address,
            {
                pb.DESCRIPTOR.services_by_name["GenerationService"]: generation,
                jobs_pb2.DESCRIPTOR.services_by_name["JobService"]: jobs,
                status_pb2.DESCRIPTOR.services_by_name["StatusService"]: status,
            },
            settings.web_allowed_origins,
            settings.web_page,
            settings.request_limit(),
            auth.KeyRing(settings.api_keys),
            web_tls(settings),
        )
    await scheduler.start()
    running.ready = asyncio.create_task(_serve_when_ready(running), name="readiness")
    log.info(
        "listening on %s (port %d)%s%s",
        settings.address,
        port,
        " with TLS" if credentials else "",
        " and API keys" if settings.api_keys else "",
    )
    return running


def web_tls(settings: ServerSettings) -> WebTls | None:
    """The browser port serves HTTPS whenever the gRPC port serves TLS, with the same files."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return WebTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


async def _serve_when_ready(running: RunningServer) -> None:
    await running.scheduler.wait_ready()
    await running.health.warm()
