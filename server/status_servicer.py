"""StatusService: the scheduler's snapshot of devices, replicas and queues."""

from __future__ import annotations

import grpc

from pointillist.v1 import status_pb2 as status_pb
from pointillist.v1 import status_pb2_grpc as status_grpc
from scheduler.interface import Scheduler
from server import conversion


class StatusServicer(status_grpc.StatusServiceServicer):
    """Reports ``scheduler.status()``. Open to every caller for now; admin-only once auth exists."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def GetServerStatus(
        self, request: status_pb.GetServerStatusRequest, context: grpc.aio.ServicerContext
    ) -> status_pb.GetServerStatusResponse:
        return conversion.server_status(self._scheduler.status())
