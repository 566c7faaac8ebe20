"""Client-side load balancing and retries: the gRPC service config of the clients' channels.

A target that resolves to several servers (``dns:///pointillist-headless:50051`` on Kubernetes,
or ``ipv4:127.0.0.1:50051,127.0.0.1:50052``) gets ``round_robin``: every call goes to the next
ready server, and a server that drains or dies drops out of the rotation. A one-address target
works the same with one server.

The retry policy covers the refusals that accepted nothing: UNAVAILABLE (a server draining or
gone; the next attempt goes to another server) and RESOURCE_EXHAUSTED (a full queue or a caller
limit). The server's ``grpc-retry-pushback-ms`` trailer sets the delay from its RetryInfo, and
says "do not retry" (-1) where a job really ran and failed, or where the wait would be long: the
caller then sees the error, with its RetryInfo, as before. gRPC retries a stream only until its
first message arrives, so a generation that started is never run twice by the client.
"""

from __future__ import annotations

import json

SERVICES = ("GenerationService", "JobService", "StatusService")
MAX_ATTEMPTS = 4

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": f"pointillist.v1.{service}"} for service in SERVICES],
            "retryPolicy": {
                "maxAttempts": MAX_ATTEMPTS,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
            },
        }
    ],
}


def balancing_options() -> list[tuple[str, object]]:
    """Channel options: the service config above, with retries on."""
    return [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
