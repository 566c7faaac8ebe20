"""The fleet scheduler's knobs (``[scheduler]`` in the server config)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FleetSettings:
    """The scheduler's knobs (``[scheduler]`` in the server config)."""

    reserve_bytes: int = 1 << 30
    footprint_margin: float = 0.1
    poll_interval_s: float = 2.0
    idle_scale_down_s: float = 300.0
    max_batch_size: int = 4
    batch_window_s: float = 0.0
    queue_capacity: int = 32
    # Jobs one caller may have waiting, over every model (0: no limit beyond the queue's).
    max_queued_per_caller: int = 16
    max_attempts: int = 3
    startup_timeout_s: float = 600.0
    job_retention_s: float = 600.0
    # Memory finished jobs may hold for late watchers (records and result images, counted by
    # scheduler/job_registry.py); over it, the oldest finished jobs are forgotten first.
    job_history_max_mib: float = 256.0
    # Replicas per model on a CPU device: there, cores are the limit, not memory.
    cpu_max_replicas: int = 1
    # The hang watchdog: a replica silent for longer than watchdog_factor x the recent peak gap
    # between its events (scaled to the batch, decaying; scheduler/watchdog.py), at least
    # watchdog_floor_s and at most watchdog_ceiling_s, is recycled.
    watchdog_factor: float = 10.0
    watchdog_floor_s: float = 120.0
    watchdog_ceiling_s: float = 3600.0
    # A device inventory read (NVML) slower than this is given up on; planning keeps its last
    # view meanwhile (scheduler/inventory_reader.py).
    inventory_timeout_s: float = 10.0
    # How long an out-of-memory error's lowered batch size or replica cap lasts
    # (scheduler/oom_limits.py); a device whose free memory grows lifts its cap sooner.
    oom_cooldown_s: float = 60.0
    # Inductor's cache for compiled models (``compile = true``), passed to their workers as
    # TORCHINDUCTOR_CACHE_DIR: kept across restarts, it spares a replica's warm-up the code
    # generation. "" leaves inductor's own default (a folder under the system's temp dir).
    compile_cache_dir: str = "~/.cache/pointillist/inductor"
    # Extra environment for every worker (e.g. POINTILLIST_CPU_THREADS, fault injection).
    worker_env: dict[str, str] = field(default_factory=dict)
