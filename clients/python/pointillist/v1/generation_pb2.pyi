import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_WEBP: _ClassVar[ImageFormat]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP8_E4M3: _ClassVar[Precision]

class GenerationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENERATION_MODE_UNSPECIFIED: _ClassVar[GenerationMode]
    GENERATION_MODE_TEXT_TO_IMAGE: _ClassVar[GenerationMode]
    GENERATION_MODE_IMAGE_TO_IMAGE: _ClassVar[GenerationMode]
    GENERATION_MODE_INPAINTING: _ClassVar[GenerationMode]

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_CPU: _ClassVar[DeviceKind]
    DEVICE_KIND_CUDA: _ClassVar[DeviceKind]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_WEBP: ImageFormat
PRECISION_UNSPECIFIED: Precision
PRECISION_FP32: Precision
PRECISION_FP16: Precision
PRECISION_BF16: Precision
PRECISION_FP8_E4M3: Precision
GENERATION_MODE_UNSPECIFIED: GenerationMode
GENERATION_MODE_TEXT_TO_IMAGE: GenerationMode
GENERATION_MODE_IMAGE_TO_IMAGE: GenerationMode
GENERATION_MODE_INPAINTING: GenerationMode
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_CPU: DeviceKind
DEVICE_KIND_CUDA: DeviceKind
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority

class PreviewOptions(_message.Message):
    __slots__ = ("every_n_steps", "max_size")
    EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    every_n_steps: int
    max_size: int
    def __init__(self, every_n_steps: _Optional[int] = ..., max_size: _Optional[int] = ...) -> None: ...

class GenerationParameters(_message.Message):
    __slots__ = ("model", "prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "seed", "num_images", "output_format", "quality", "preview", "init_image", "strength", "mask")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    num_images: int
    output_format: ImageFormat
    quality: int
    preview: PreviewOptions
    init_image: InputImage
    strength: float
    mask: InputImage
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., num_images: _Optional[int] = ..., output_format: _Optional[_Union[ImageFormat, str]] = ..., quality: _Optional[int] = ..., preview: _Optional[_Union[PreviewOptions, _Mapping]] = ..., init_image: _Optional[_Union[InputImage, _Mapping]] = ..., strength: _Optional[float] = ..., mask: _Optional[_Union[InputImage, _Mapping]] = ...) -> None: ...

class InputImage(_message.Message):
    __slots__ = ("data", "job_image")
    DATA_FIELD_NUMBER: _ClassVar[int]
    JOB_IMAGE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    job_image: JobImageReference
    def __init__(self, data: _Optional[bytes] = ..., job_image: _Optional[_Union[JobImageReference, _Mapping]] = ...) -> None: ...

class JobImageReference(_message.Message):
    __slots__ = ("job_id", "index")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    index: int
    def __init__(self, job_id: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class StreamGenerateRequest(_message.Message):
    __slots__ = ("parameters", "priority")
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    parameters: GenerationParameters
    priority: Priority
    def __init__(self, parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ...) -> None: ...

class StreamGenerateResponse(_message.Message):
    __slots__ = ("job_id", "queued", "started", "progress", "preview", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    queued: QueuedEvent
    started: StartedEvent
    progress: ProgressEvent
    preview: PreviewEvent
    result: GenerationResult
    def __init__(self, job_id: _Optional[str] = ..., queued: _Optional[_Union[QueuedEvent, _Mapping]] = ..., started: _Optional[_Union[StartedEvent, _Mapping]] = ..., progress: _Optional[_Union[ProgressEvent, _Mapping]] = ..., preview: _Optional[_Union[PreviewEvent, _Mapping]] = ..., result: _Optional[_Union[GenerationResult, _Mapping]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("parameters", "priority")
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    parameters: GenerationParameters
    priority: Priority
    def __init__(self, parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("job_id", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    result: GenerationResult
    def __init__(self, job_id: _Optional[str] = ..., result: _Optional[_Union[GenerationResult, _Mapping]] = ...) -> None: ...

class QueuedEvent(_message.Message):
    __slots__ = ("position", "estimated_wait", "cold_start")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    position: int
    estimated_wait: _duration_pb2.Duration
    cold_start: bool
    def __init__(self, position: _Optional[int] = ..., estimated_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cold_start: _Optional[bool] = ...) -> None: ...

class StartedEvent(_message.Message):
    __slots__ = ("replica_id", "device", "batch_size")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    device: Device
    batch_size: int
    def __init__(self, replica_id: _Optional[str] = ..., device: _Optional[_Union[Device, _Mapping]] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("kind", "id", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: DeviceKind
    id: str
    name: str
    def __init__(self, kind: _Optional[_Union[DeviceKind, str]] = ..., id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("step", "total_steps", "elapsed", "estimated_remaining", "steps_per_second")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_REMAINING_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    elapsed: _duration_pb2.Duration
    estimated_remaining: _duration_pb2.Duration
    steps_per_second: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., estimated_remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., steps_per_second: _Optional[float] = ...) -> None: ...

class PreviewEvent(_message.Message):
    __slots__ = ("step", "images")
    STEP_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    step: int
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, step: _Optional[int] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data", "mime_type", "width", "height", "seed", "url")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    mime_type: str
    width: int
    height: int
    seed: int
    url: str
    def __init__(self, data: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., seed: _Optional[int] = ..., url: _Optional[str] = ...) -> None: ...

class GenerationResult(_message.Message):
    __slots__ = ("images", "timings", "reproducibility", "cached")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REPRODUCIBILITY_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    timings: Timings
    reproducibility: Reproducibility
    cached: bool
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., reproducibility: _Optional[_Union[Reproducibility, _Mapping]] = ..., cached: _Optional[bool] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_wait", "text_encoding", "denoising", "decoding", "image_encoding", "total", "text_encoding_cached")
    QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    TEXT_ENCODING_FIELD_NUMBER: _ClassVar[int]
    DENOISING_FIELD_NUMBER: _ClassVar[int]
    DECODING_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_ENCODING_CACHED_FIELD_NUMBER: _ClassVar[int]
    queue_wait: _duration_pb2.Duration
    text_encoding: _duration_pb2.Duration
    denoising: _duration_pb2.Duration
    decoding: _duration_pb2.Duration
    image_encoding: _duration_pb2.Duration
    total: _duration_pb2.Duration
    text_encoding_cached: bool
    def __init__(self, queue_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., text_encoding: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., denoising: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., decoding: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., image_encoding: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., text_encoding_cached: _Optional[bool] = ...) -> None: ...

class ComponentPrecision(_message.Message):
    __slots__ = ("component", "weights", "compute")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FIELD_NUMBER: _ClassVar[int]
    component: str
    weights: Precision
    compute: Precision
    def __init__(self, component: _Optional[str] = ..., weights: _Optional[_Union[Precision, str]] = ..., compute: _Optional[_Union[Precision, str]] = ...) -> None: ...

class Reproducibility(_message.Message):
    __slots__ = ("model_id", "weights_revision", "precisions", "scheduler", "library_versions", "device", "parameters", "mode", "init_image_sha256", "mask_sha256")
    class LibraryVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_REVISION_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    MASK_SHA256_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    weights_revision: str
    precisions: _containers.RepeatedCompositeFieldContainer[ComponentPrecision]
    scheduler: str
    library_versions: _containers.ScalarMap[str, str]
    device: Device
    parameters: GenerationParameters
    mode: GenerationMode
    init_image_sha256: str
    mask_sha256: str
    def __init__(self, model_id: _Optional[str] = ..., weights_revision: _Optional[str] = ..., precisions: _Optional[_Iterable[_Union[ComponentPrecision, _Mapping]]] = ..., scheduler: _Optional[str] = ..., library_versions: _Optional[_Mapping[str, str]] = ..., device: _Optional[_Union[Device, _Mapping]] = ..., parameters: _Optional[_Union[GenerationParameters, _Mapping]] = ..., mode: _Optional[_Union[GenerationMode, str]] = ..., init_image_sha256: _Optional[str] = ..., mask_sha256: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "source", "precision_policy", "precisions", "precision_reason", "device_kinds", "limits", "defaults", "ready")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_POLICY_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KINDS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    precision_policy: str
    precisions: _containers.RepeatedCompositeFieldContainer[ComponentPrecision]
    precision_reason: str
    device_kinds: _containers.RepeatedScalarFieldContainer[DeviceKind]
    limits: ModelLimits
    defaults: ModelDefaults
    ready: bool
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., precision_policy: _Optional[str] = ..., precisions: _Optional[_Iterable[_Union[ComponentPrecision, _Mapping]]] = ..., precision_reason: _Optional[str] = ..., device_kinds: _Optional[_Iterable[_Union[DeviceKind, str]]] = ..., limits: _Optional[_Union[ModelLimits, _Mapping]] = ..., defaults: _Optional[_Union[ModelDefaults, _Mapping]] = ..., ready: _Optional[bool] = ...) -> None: ...

class ModelLimits(_message.Message):
    __slots__ = ("max_width", "max_height", "max_steps", "max_images", "max_prompt_chars", "max_pixel_steps", "max_request_bytes")
    MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXEL_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_width: int
    max_height: int
    max_steps: int
    max_images: int
    max_prompt_chars: int
    max_pixel_steps: int
    max_request_bytes: int
    def __init__(self, max_width: _Optional[int] = ..., max_height: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_images: _Optional[int] = ..., max_prompt_chars: _Optional[int] = ..., max_pixel_steps: _Optional[int] = ..., max_request_bytes: _Optional[int] = ...) -> None: ...

class ModelDefaults(_message.Message):
    __slots__ = ("width", "height", "steps", "guidance_scale")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    steps: int
    guidance_scale: float
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ...) -> None: ...
