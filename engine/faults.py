"""Fault injection for tests: off unless its environment variable is set in the worker.

Each setting lets a test put a real worker into a state it could otherwise reach only by luck or
by guessing how fast the machine is:

- ``POINTILLIST_FAULT_OOM_ABOVE_IMAGES=N``: every batch of more than N images raises the
  device's out-of-memory error.
- ``POINTILLIST_FAULT_FAIL_PROMPT=TEXT``: a batch holding a job whose prompt is TEXT raises a
  plain error (not out of memory) whose message holds the prompt: the model failing.
- ``POINTILLIST_FAULT_HANG_PROMPT=TEXT``: a job whose prompt is TEXT hangs after its first step
  until the scheduler kills the worker or closes its socket (the hang watchdog's test).
- ``POINTILLIST_FAULT_HOLD_DIR=DIR``: a job whose prompt starts with ``hold:`` stops after its
  first step and waits there until it is cancelled, the socket closes, or the file
  ``DIR/<the rest of the prompt>`` exists; then it runs on as usual. A test holds a job where it
  wants it (running, one step done) and releases it by creating the file, so no outcome depends
  on how long a step takes.
- ``POINTILLIST_FAULT_DEVICE_MEMORY_BYTES=N``: the worker reports N bytes as the GPU memory it
  measured itself (``engine.device_memory``), whatever its device: a CPU worker on a simulated
  or faked GPU stands for a GPU worker, for the scheduler's choice of footprint source.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from engine import ipc

log = logging.getLogger("pointillist.worker")

OOM_FAULT_ENV = "POINTILLIST_FAULT_OOM_ABOVE_IMAGES"
HANG_FAULT_ENV = "POINTILLIST_FAULT_HANG_PROMPT"
FAIL_FAULT_ENV = "POINTILLIST_FAULT_FAIL_PROMPT"
HOLD_DIR_ENV = "POINTILLIST_FAULT_HOLD_DIR"
DEVICE_MEMORY_ENV = "POINTILLIST_FAULT_DEVICE_MEMORY_BYTES"
HOLD_PREFIX = "hold:"
# How often a held job looks for its release file. The wait itself returns at once on a cancel.
_RELEASE_POLL_S = 0.01


def hold_prompt(name: str) -> str:
    """The prompt of a job that ``POINTILLIST_FAULT_HOLD_DIR`` holds until ``DIR/name`` exists."""
    return HOLD_PREFIX + name


def injected_device_memory() -> int | None:
    """The GPU memory to report instead of the measured one (None: measure)."""
    value = os.environ.get(DEVICE_MEMORY_ENV)
    if value is None:
        return None
    log.warning("reporting injected device memory of %s bytes (%s)", value, DEVICE_MEMORY_ENV)
    return int(value)


def raise_injected_out_of_memory(batch: ipc.RunBatch) -> None:
    limit = os.environ.get(OOM_FAULT_ENV)
    images = sum(job.spec.num_images for job in batch.jobs)
    if limit is not None and images > int(limit):
        import torch

        raise torch.OutOfMemoryError(f"injected: {images} images > {limit} ({OOM_FAULT_ENV})")


def raise_injected_failure(batch: ipc.RunBatch) -> None:
    prompt = os.environ.get(FAIL_FAULT_ENV)
    if prompt is not None and any(job.spec.prompt == prompt for job in batch.jobs):
        raise RuntimeError(f"injected failure for prompt {prompt!r} ({FAIL_FAULT_ENV})")


class StepFaults:
    """What one batch's step callback does after a step: nothing, hang, or hold (see above)."""

    def __init__(self, prompts: list[str], socket_closed: threading.Event) -> None:
        self._prompts = prompts
        self._socket_closed = socket_closed
        self._hang_prompt = os.environ.get(HANG_FAULT_ENV)
        hold_dir = os.environ.get(HOLD_DIR_ENV)
        self._hold_dir = Path(hold_dir) if hold_dir else None
        self._held: set[int] = set()

    def after_step(self, index: int, cancel: threading.Event) -> None:
        """Called on the denoising thread after member ``index`` reported a step."""
        prompt = self._prompts[index]
        if self._hang_prompt is not None and prompt == self._hang_prompt:
            log.warning("injected hang (%s)", HANG_FAULT_ENV)
            self._socket_closed.wait()  # a stuck step: only the scheduler ends it
        held_here = prompt.startswith(HOLD_PREFIX) and index not in self._held
        if self._hold_dir is not None and held_here:
            self._held.add(index)  # once per job: after the release it runs freely
            self._hold(Path(prompt[len(HOLD_PREFIX) :]).name, cancel)

    def _hold(self, name: str, cancel: threading.Event) -> None:
        assert self._hold_dir is not None
        release = self._hold_dir / name
        log.info("injected hold after step 1 until %s exists (%s)", release, HOLD_DIR_ENV)
        while not (cancel.is_set() or self._socket_closed.is_set() or release.exists()):
            cancel.wait(_RELEASE_POLL_S)
