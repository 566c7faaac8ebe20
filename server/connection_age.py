"""How long a client connection may live, so that clients re-resolve and spread to new servers.

A client balancing with ``round_robin`` over a headless Service resolves the pod addresses when it
connects. Without an age limit it keeps its first connections for ever: a new pod gets no traffic
and a scaled-down one keeps its clients until it dies. Past ``max_connection_age_s`` (gRPC adds
+/-10% jitter itself) the server sends GOAWAY; the client re-resolves and opens new connections.
Calls already open on the old connection run to their end: no age grace is set, so gRPC's
default (no limit) applies and a long generation is never cut off by the age limit.
"""

from __future__ import annotations


def connection_age_options(max_connection_age_s: float) -> list[tuple[str, int]]:
    """gRPC server options for ``max_connection_age_s`` (0: connections live for ever)."""
    if max_connection_age_s <= 0:
        return []
    return [("grpc.max_connection_age_ms", max(1, int(max_connection_age_s * 1000)))]
