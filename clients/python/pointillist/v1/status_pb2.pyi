from pointillist.v1 import generation_pb2 as _generation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_STATE_UNSPECIFIED: _ClassVar[ReplicaState]
    REPLICA_STATE_STARTING: _ClassVar[ReplicaState]
    REPLICA_STATE_LOADING: _ClassVar[ReplicaState]
    REPLICA_STATE_WARMING: _ClassVar[ReplicaState]
    REPLICA_STATE_READY: _ClassVar[ReplicaState]
    REPLICA_STATE_BUSY: _ClassVar[ReplicaState]
    REPLICA_STATE_DRAINING: _ClassVar[ReplicaState]
    REPLICA_STATE_STOPPED: _ClassVar[ReplicaState]
    REPLICA_STATE_FAILED: _ClassVar[ReplicaState]
REPLICA_STATE_UNSPECIFIED: ReplicaState
REPLICA_STATE_STARTING: ReplicaState
REPLICA_STATE_LOADING: ReplicaState
REPLICA_STATE_WARMING: ReplicaState
REPLICA_STATE_READY: ReplicaState
REPLICA_STATE_BUSY: ReplicaState
REPLICA_STATE_DRAINING: ReplicaState
REPLICA_STATE_STOPPED: ReplicaState
REPLICA_STATE_FAILED: ReplicaState

class GetServerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerStatusResponse(_message.Message):
    __slots__ = ("devices", "replicas", "models", "draining")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceStatus]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    models: _containers.RepeatedCompositeFieldContainer[ModelQueueStatus]
    draining: bool
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceStatus, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelQueueStatus, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("id", "kind", "name", "total_bytes", "free_bytes", "used_bytes", "compute_capability", "utilization_percent", "processes")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: _generation_pb2.DeviceKind
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    compute_capability: ComputeCapability
    utilization_percent: float
    processes: _containers.RepeatedCompositeFieldContainer[DeviceProcess]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[_generation_pb2.DeviceKind, str]] = ..., name: _Optional[str] = ..., total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., compute_capability: _Optional[_Union[ComputeCapability, _Mapping]] = ..., utilization_percent: _Optional[float] = ..., processes: _Optional[_Iterable[_Union[DeviceProcess, _Mapping]]] = ...) -> None: ...

class ComputeCapability(_message.Message):
    __slots__ = ("major", "minor")
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    major: int
    minor: int
    def __init__(self, major: _Optional[int] = ..., minor: _Optional[int] = ...) -> None: ...

class DeviceProcess(_message.Message):
    __slots__ = ("pid", "used_bytes")
    PID_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    pid: int
    used_bytes: int
    def __init__(self, pid: _Optional[int] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("id", "model", "device_id", "state", "pid", "memory_bytes", "running_jobs")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    device_id: str
    state: ReplicaState
    pid: int
    memory_bytes: int
    running_jobs: int
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., device_id: _Optional[str] = ..., state: _Optional[_Union[ReplicaState, str]] = ..., pid: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., running_jobs: _Optional[int] = ...) -> None: ...

class ModelQueueStatus(_message.Message):
    __slots__ = ("model", "queued_jobs", "running_jobs", "replicas", "footprint_bytes", "footprint_measured")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUEUED_JOBS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINT_MEASURED_FIELD_NUMBER: _ClassVar[int]
    model: str
    queued_jobs: int
    running_jobs: int
    replicas: int
    footprint_bytes: int
    footprint_measured: bool
    def __init__(self, model: _Optional[str] = ..., queued_jobs: _Optional[int] = ..., running_jobs: _Optional[int] = ..., replicas: _Optional[int] = ..., footprint_bytes: _Optional[int] = ..., footprint_measured: _Optional[bool] = ...) -> None: ...
