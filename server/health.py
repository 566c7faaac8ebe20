"""grpc.health.v1 that follows the fleet's capacity, per service, and answers ``List``.

What each name reports (every name is NOT_SERVING from the drain on, for good):

- ``""`` and ``pointillist.v1.GenerationService``: SERVING when a job can run now, that is when
  some model has a ready replica; NOT_SERVING while warming up (until every model has had a
  first warm replica) and whenever no replica is ready (every one failed, dead or restarting).
  Load balancers and readiness probes ask ``""``.
- ``pointillist.v1.JobService``: SERVING once warm. It accepts jobs while replicas restart (they
  wait in the queue) and answers for jobs it holds without any replica.
- ``pointillist.v1.StatusService``: SERVING from the moment the server listens; it reports the
  fleet, warming or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from scheduler.interface import Scheduler

log = logging.getLogger("pointillist.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# How long one wait for a capacity change lasts before it simply waits again.
_WAIT_S = 3600.0


class HealthServicer(health_aio.HealthServicer):
    """The grpc reference servicer plus ``List`` (which it leaves UNIMPLEMENTED)."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._server_status.items()
            }
        )


class CapacityHealth:
    """Publishes each service's status (see the module docstring) into ``servicer``."""

    def __init__(
        self,
        servicer: HealthServicer,
        scheduler: Scheduler,
        *,
        capacity: tuple[str, ...],
        warm: tuple[str, ...],
        up: tuple[str, ...],
    ) -> None:
        self._servicer = servicer
        self._scheduler = scheduler
        self._capacity = capacity  # SERVING while a job can run
        self._warm = warm  # SERVING once every model was warm once
        self._up = up  # SERVING while the server listens
        self._follower: asyncio.Task[None] | None = None

    async def starting(self) -> None:
        """Before the server listens: only the ``up`` services are SERVING."""
        for service in self._capacity + self._warm:
            await self._servicer.set(service, NOT_SERVING)
        for service in self._up:
            await self._servicer.set(service, SERVING)

    async def warm(self) -> None:
        """Every model has had a warm replica: publish capacity now and follow it from now on."""
        for service in self._warm:
            await self._servicer.set(service, SERVING)
        can_run = self._scheduler.can_run_jobs()
        await self._publish(can_run)
        if can_run:
            log.info("all models warm: SERVING")
        else:  # the only replica died a moment after warming up
            log.warning("all models warm, but no replica is ready now: NOT_SERVING")
        self._follower = asyncio.create_task(self._follow(can_run), name="health")

    async def drain(self) -> None:
        """Every service NOT_SERVING for good, and the follower stopped."""
        await self._servicer.enter_graceful_shutdown()
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)

    async def _follow(self, published: bool) -> None:
        try:
            await self._follow_changes(published)
        except Exception:
            log.exception("health stopped following capacity")
            raise

    async def _follow_changes(self, published: bool) -> None:
        while True:
            can_run = await self._next_change(published)
            published = can_run
            await self._publish(can_run)
            if can_run:
                log.info("a replica is ready again: SERVING")
            else:
                log.warning("no model has a ready replica: NOT_SERVING")

    async def _next_change(self, published: bool) -> bool:
        """Wait (as long as it takes) until ``can_run_jobs()`` differs from ``published``."""
        while True:
            with contextlib.suppress(TimeoutError):
                await self._scheduler.wait_until(
                    lambda: self._scheduler.can_run_jobs() != published, _WAIT_S
                )
            can_run = self._scheduler.can_run_jobs()
            if can_run != published:
                return can_run

    async def _publish(self, can_run: bool) -> None:
        for service in self._capacity:
            await self._servicer.set(service, SERVING if can_run else NOT_SERVING)
