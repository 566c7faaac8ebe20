"""Builds and runs the gRPC server: generation service, health, reflection, graceful drain."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from scheduler.interface import Scheduler
from scheduler.single_replica import SingleReplicaScheduler
from server.servicer import GenerationServicer
from server.settings import ServerSettings

log = logging.getLogger("pointillist.server")

GENERATION_SERVICE = pb.DESCRIPTOR.services_by_name["GenerationService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class RunningServer:
    """A started server. ``ready`` finishes once every model has a warm replica (or failed)."""

    server: grpc.aio.Server
    port: int
    scheduler: Scheduler
    health: health_aio.HealthServicer
    ready: asyncio.Task[None]

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for service in ("", GENERATION_SERVICE):
            await self.health.set(service, status)

    async def drain(self, grace_s: float) -> None:
        """Go NOT_SERVING, let accepted jobs finish within ``grace_s``, then stop everything."""
        log.info("draining: up to %.0fs for accepted jobs", grace_s)
        self.ready.cancel()
        await self.set_serving(False)
        await self.scheduler.drain(grace_s)
        # Jobs are over; the short grace lets their last messages reach the callers.
        await self.server.stop(grace=2.0)
        log.info("stopped")


def build_scheduler(settings: ServerSettings) -> Scheduler:
    return SingleReplicaScheduler(
        list(settings.models),
        default_model=settings.default_model,
        queue_capacity=settings.queue_capacity,
        startup_timeout_s=settings.startup_timeout_s,
        job_retention_s=settings.job_retention_s,
    )


async def create_server(
    settings: ServerSettings, scheduler: Scheduler | None = None
) -> RunningServer:
    """Bind ``settings.address`` (port 0 picks a free port), start serving and warming replicas.

    Health answers NOT_SERVING until every model has a warm replica, then SERVING.
    """
    scheduler = scheduler or build_scheduler(settings)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", settings.max_response_bytes),
        ]
    )
    pb_grpc.add_GenerationServiceServicer_to_server(GenerationServicer(scheduler), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            GENERATION_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(settings.address)
    running = RunningServer(
        server, port, scheduler, health, ready=asyncio.create_task(asyncio.sleep(0))
    )
    await running.set_serving(False)
    await server.start()
    await scheduler.start()
    running.ready = asyncio.create_task(_serve_when_ready(running), name="readiness")
    log.info("listening on %s (port %d)", settings.address, port)
    return running


async def _serve_when_ready(running: RunningServer) -> None:
    await running.scheduler.wait_ready()
    await running.set_serving(True)
    log.info("all models warm: SERVING")
