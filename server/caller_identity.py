"""Who a caller is, for the per-caller stream and queue limits and the fair queue.

- With API keys on: the key's name (``server.auth``), however many connections it opens.
- Without keys: the client's address, IP only (``ipv4:10.0.0.7``, ``ipv6:[::1]``). The port
  differs per connection, so counting by the peer string let a client escape every per-caller
  limit by opening new connections. The trade-off: clients behind one NAT or proxy share one
  identity, and so one set of limits.
- Behind a proxy that the operator trusts (``trusted_proxies``, CIDRs such as ``10.0.0.0/8``),
  the client is the right-most address of ``x-forwarded-for`` that is not itself a trusted
  proxy: the proxies append what they saw, so only their entries can be believed, and a client
  that sends its own header cannot pick its identity. From any other peer the header is ignored.
  The browser port (``server.connect_bridge``) identifies by its peer.
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc

from server.auth import current_caller
from server.rpc_handlers import guarded

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED_CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pointillist_forwarded_client", default=None
)


def trusted_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The ``trusted_proxies`` setting, parsed; ValueError names a malformed entry."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {cidr!r} is not an IP network: {exc}") from None
    return tuple(networks)


def peer_address(peer: str) -> str:
    """A gRPC peer string without its port: ``ipv4:1.2.3.4:5`` -> ``ipv4:1.2.3.4``,
    ``ipv6:[::1]:5`` -> ``ipv6:[::1]``; anything else (``unix:...``) as it is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return f"ipv4:{rest.rsplit(':', 1)[0]}"
    if kind == "ipv6" and rest.startswith("[") and "]" in rest:
        return f"ipv6:{rest[: rest.index(']') + 1]}"
    return peer


def _ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    address = peer_address(peer).partition(":")[2].strip("[]")
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def forwarded_client(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """The client behind a trusted proxy (see the module docstring), or None."""
    ip = _ip(peer)
    if ip is None or not any(ip in network for network in trusted):
        return None
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return None  # a malformed chain: believe none of it
        if not any(address in network for network in trusted):
            return f"ipv{address.version}:{address if address.version == 4 else f'[{address}]'}"
    return None


def caller_of(context: grpc.aio.ServicerContext) -> str:
    """This RPC's caller (see the module docstring)."""
    authenticated = current_caller()
    if authenticated is not None:
        return authenticated.name
    return _FORWARDED_CLIENT.get() or peer_address(str(context.peer()))


class ForwardedForInterceptor(grpc.aio.ServerInterceptor):
    """Reads ``x-forwarded-for`` from a trusted proxy's calls (installed only with proxies)."""

    def __init__(self, trusted: Sequence[Network]) -> None:
        self._trusted = tuple(trusted)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        forwarded = [str(value) for key, value in metadata if key == "x-forwarded-for"]

        async def identify(request: Any, context: grpc.aio.ServicerContext) -> None:
            client = forwarded_client(str(context.peer()), forwarded, self._trusted)
            _FORWARDED_CLIENT.set(client)  # this RPC's task only

        return guarded(handler, identify)


def interceptors(trusted_proxies: Iterable[str]) -> list[grpc.aio.ServerInterceptor]:
    trusted = trusted_networks(trusted_proxies)
    return [ForwardedForInterceptor(trusted)] if trusted else []
