"""pointillist client: generated stubs (pointillist.v1), Client and AsyncClient, and the CLI.

from pointillist import Client

with Client("127.0.0.1:50051") as client:
    result = client.generate("a lighthouse at dusk", seed=7)
    result.images[0].save("lighthouse.png")
"""

from pointillist.async_client import AsyncClient, AsyncGenerationStream
from pointillist.client import Client, GenerationStream
from pointillist.errors import (
    CancelledError,
    DeadlineExceededError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PointillistError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    error_from_rpc,
)
from pointillist.events import (
    ComponentPrecision,
    Device,
    DeviceKind,
    Event,
    Image,
    ModelDefaults,
    ModelInfo,
    ModelLimits,
    ModelList,
    Precision,
    Preview,
    Progress,
    Queued,
    Reproducibility,
    Result,
    Started,
    Timings,
)

__all__ = [
    "AsyncClient",
    "AsyncGenerationStream",
    "CancelledError",
    "Client",
    "ComponentPrecision",
    "DeadlineExceededError",
    "Device",
    "DeviceKind",
    "Event",
    "FieldViolation",
    "GenerationStream",
    "Image",
    "InternalError",
    "InvalidArgumentError",
    "ModelDefaults",
    "ModelInfo",
    "ModelLimits",
    "ModelList",
    "NotFoundError",
    "PermissionDeniedError",
    "PointillistError",
    "Precision",
    "Preview",
    "Progress",
    "Queued",
    "Reproducibility",
    "ResourceExhaustedError",
    "Result",
    "Started",
    "Timings",
    "UnauthenticatedError",
    "UnavailableError",
    "error_from_rpc",
]
