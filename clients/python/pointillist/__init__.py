"""pointillist client: generated stubs (pointillist.v1), Client and AsyncClient, and the CLI.

from pointillist import Client

with Client("127.0.0.1:50051") as client:
    result = client.generate("a lighthouse at dusk", seed=7)
    result.images[0].save("lighthouse.png")

    job_id = client.submit("a harbour at night", priority="low")
    print(client.get_job(job_id).state)
"""

from pointillist.async_client import AsyncClient, AsyncGenerationStream, AsyncJobWatch
from pointillist.client import Client, GenerationStream, JobWatch
from pointillist.credentials import TlsSettings
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
    error_from_status,
)
from pointillist.events import (
    ComponentPrecision,
    Device,
    DeviceKind,
    Event,
    GenerationMode,
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
from pointillist.jobs import GenerationParameters, JobInfo, JobState, Priority
from pointillist.server_status import (
    DeviceProcess,
    DeviceStatus,
    ModelQueueStatus,
    ReplicaState,
    ReplicaStatus,
    ServerStatus,
)

__all__ = [
    "AsyncClient",
    "AsyncGenerationStream",
    "AsyncJobWatch",
    "CancelledError",
    "Client",
    "ComponentPrecision",
    "DeadlineExceededError",
    "Device",
    "DeviceKind",
    "DeviceProcess",
    "DeviceStatus",
    "Event",
    "FieldViolation",
    "GenerationMode",
    "GenerationParameters",
    "GenerationStream",
    "Image",
    "InternalError",
    "InvalidArgumentError",
    "JobInfo",
    "JobState",
    "JobWatch",
    "ModelDefaults",
    "ModelInfo",
    "ModelLimits",
    "ModelList",
    "ModelQueueStatus",
    "NotFoundError",
    "PermissionDeniedError",
    "PointillistError",
    "Precision",
    "Preview",
    "Priority",
    "Progress",
    "Queued",
    "ReplicaState",
    "ReplicaStatus",
    "Reproducibility",
    "ResourceExhaustedError",
    "Result",
    "ServerStatus",
    "Started",
    "Timings",
    "TlsSettings",
    "UnauthenticatedError",
    "UnavailableError",
    "error_from_rpc",
    "error_from_status",
]
