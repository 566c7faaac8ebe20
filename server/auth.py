"""API keys: ``authorization: Bearer <key>`` metadata, checked against hashed keys with roles.

The config holds each key's SHA-256 (hex), never the key. SHA-256 rather than a slow password
hash (scrypt, PBKDF2) because the keys are 256 random bits (``new_key``): nobody can guess
through that space however fast the hash, and a slow hash would cost milliseconds on every RPC.
Hashes are compared with ``hmac.compare_digest`` against every configured key, so the time taken
says nothing about how close a guess came or which key matched.

Every method needs a key except the health service. A ``user`` key may call everything but the
admin-only methods, which answer PERMISSION_DENIED; an ``admin`` key may call everything. With
no keys configured, authentication is off and the interceptor is not installed.

The key's ``name`` is the caller's identity: the scheduler's fairness and the per-caller limits
count by it. No key, hash or ``authorization`` value ever appears in a log line or an error.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import grpc

from server.rpc_handlers import guarded

KEY_PREFIX = "pk_"
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
ADMIN_METHODS = frozenset({"/pointillist.v1.StatusService/GetServerStatus"})


class Role(StrEnum):
    """What a key may do."""

    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """One configured key: who it is (``name``), its ``role``, and the SHA-256 hex of the key."""

    name: str
    role: Role
    sha256: str

    def __repr__(self) -> str:  # the hash is not secret, but logs have no use for it
        return f"ApiKey(name={self.name!r}, role={self.role.value!r})"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller."""

    name: str
    role: Role


_CURRENT_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "pointillist_caller", default=None
)


def current_caller() -> Caller | None:
    """The caller of the RPC being served, when authentication is on (else None)."""
    return _CURRENT_CALLER.get()


def new_key() -> str:
    """A fresh random key: 32 random bytes, URL-safe, with a recognisable prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest the config stores for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys; ``identify`` finds the caller a request's metadata names."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def identify(self, metadata: Sequence[tuple[str, Any]] | None) -> Caller | None:
        """The caller whose key the ``authorization`` metadata carries; None if there is no
        such key (missing, malformed or unknown)."""
        presented = _bearer_token(metadata)
        if presented is None:
            return None
        digest = hash_key(presented)
        found: ApiKey | None = None
        for key in self._keys:  # no early exit: every key costs the same comparison
            if hmac.compare_digest(digest, key.sha256) and found is None:
                found = key
        return Caller(found.name, found.role) if found is not None else None


def _bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED without a valid key, PERMISSION_DENIED for a user on admin methods."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = handler_call_details.invocation_metadata

        async def authorize(request: Any, context: grpc.aio.ServicerContext) -> None:
            await authorize_call(self._keys, method, metadata, context)

        return guarded(handler, authorize)


async def authorize_call(
    keys: KeyRing,
    method: str,
    metadata: Sequence[tuple[str, Any]] | None,
    context: grpc.aio.ServicerContext,
) -> None:
    """Abort the call without a valid key, or a user's call to an admin method; otherwise make
    its caller current for this RPC's task. Both the gRPC port (ApiKeyInterceptor) and the
    browser port (server.connect_bridge) check calls here."""
    caller = keys.identify(metadata)
    if caller is None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "a valid API key is required: send the metadata 'authorization: Bearer <key>'",
        )
    elif method in ADMIN_METHODS and caller.role is not Role.ADMIN:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} needs an admin key")
    else:
        _CURRENT_CALLER.set(caller)  # this RPC's task only


def interceptors(keys: Iterable[ApiKey]) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors that enforce ``keys``: none when no key is configured."""
    ring = KeyRing(keys)
    return [ApiKeyInterceptor(ring)] if ring else []
