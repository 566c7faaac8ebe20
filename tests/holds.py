"""Hold a real job after its first step until the test releases it (``engine.faults``).

Every demo server and fleet the tests start gives its workers ``HOLD_ENV``; a job whose prompt is
``Hold.prompt`` then stops after step 1 and waits for ``release()`` or a cancel. Tests that need a
job to be "still running" use this instead of a job that is merely long, so no outcome depends on
how fast the machine is.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from engine.faults import HOLD_DIR_ENV, hold_prompt

HOLD_DIR = Path(tempfile.mkdtemp(prefix="pointillist-holds-"))
atexit.register(shutil.rmtree, HOLD_DIR, ignore_errors=True)
HOLD_ENV = {HOLD_DIR_ENV: str(HOLD_DIR)}


@dataclass(frozen=True)
class Hold:
    """One held job's handle: its prompt, and the release."""

    name: str

    @property
    def prompt(self) -> str:
        return hold_prompt(self.name)

    def release(self) -> None:
        (HOLD_DIR / self.name).touch()


def new_hold(label: str = "job") -> Hold:
    """A hold no other test shares (a fresh name, so a fresh release file)."""
    return Hold(f"{label}-{uuid.uuid4().hex[:12]}")
