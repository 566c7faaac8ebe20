"""A live progress display for generation streams, written to a text stream (stderr).

On a terminal it redraws one line in place with ``\\r``. Elsewhere (CI logs, files) it prints
plain lines, a progress line at most once per tenth of the steps, so logs stay readable.
The ``render_*`` functions are pure and hold all the formatting.
"""

from __future__ import annotations

import math
from typing import TextIO

from pointillist.events import Event, Preview, Progress, Queued, Result, Started

__all__ = [
    "ProgressBar",
    "format_duration",
    "render_bar",
    "render_progress",
    "render_queued",
    "render_started",
]

BAR_WIDTH = 30


def format_duration(seconds: float | None) -> str:
    """``0:07``, ``12:34``, ``1:02:03``; ``--:--`` when unknown."""
    if seconds is None or math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return "--:--"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def render_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[#########.....]`` filled to ``fraction`` (clamped to 0..1), ASCII only."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render_progress(
    step: int,
    total_steps: int,
    steps_per_second: float,
    remaining_s: float | None,
    width: int = BAR_WIDTH,
) -> str:
    """``step 12/28 [#####.....]  43%  2.31 it/s  ETA 0:07``; the step is padded to the
    width of the total so that the bar stays put.

    Without a server estimate, the ETA comes from the speed; unknown speed shows ``--:--``.
    """
    fraction = step / total_steps if total_steps else 0.0
    if remaining_s is None and steps_per_second > 0:
        remaining_s = max(total_steps - step, 0) / steps_per_second
    counter = f"{step:>{len(str(total_steps))}}/{total_steps}"
    return (
        f"step {counter} {render_bar(fraction, width)} {round(fraction * 100):3d}%"
        f"  {steps_per_second:.2f} it/s  ETA {format_duration(remaining_s)}"
    )


def render_queued(position: int, estimated_wait_s: float | None) -> str:
    """``queued: next in line`` or ``queued: position 3``, with the estimated wait if known."""
    where = "next in line" if position == 0 else f"position {position}"
    wait = f", ~{format_duration(estimated_wait_s)} wait" if estimated_wait_s is not None else ""
    return f"queued: {where}{wait}"


def render_started(event: Started) -> str:
    """``running on NVIDIA H100 80GB HBM3 (replica r1, batch of 2)``."""
    device = event.device.name or event.device.id or str(event.device.kind)
    extras = [f"replica {event.replica_id}"] if event.replica_id else []
    if event.batch_size > 1:
        extras.append(f"batch of {event.batch_size}")
    return f"running on {device}" + (f" ({', '.join(extras)})" if extras else "")


class ProgressBar:
    """Shows a generation's events on ``stream``; call :meth:`update` with each event.

    ``is_tty`` defaults to ``stream.isatty()``. Call :meth:`close` at the end (or on error) to
    finish the line being redrawn.
    """

    def __init__(self, stream: TextIO, *, is_tty: bool | None = None, width: int = BAR_WIDTH):
        self._stream = stream
        self._tty = stream.isatty() if is_tty is None else is_tty
        self._width = width
        self._line_length = 0  # length of the line being redrawn (TTY); 0 when none
        self._last_position: int | None = None
        self._last_decile = 0

    def update(self, event: Event) -> None:
        """Show one event; previews and the result show nothing."""
        if isinstance(event, Queued):
            self.queued(event.position, event.estimated_wait_s)
        elif isinstance(event, Started):
            self._print(render_started(event))
        elif isinstance(event, Progress):
            self.progress(event.step, event.total_steps, event.steps_per_second, event.remaining_s)
        elif isinstance(event, Preview | Result):
            pass

    def queued(self, position: int, estimated_wait_s: float | None) -> None:
        """Show the queue position; off a TTY, only when it changed."""
        line = render_queued(position, estimated_wait_s)
        if self._tty:
            self._redraw(line)
        elif position != self._last_position:
            self._print(line)
        self._last_position = position

    def progress(
        self,
        step: int,
        total_steps: int,
        steps_per_second: float,
        remaining_s: float | None,
    ) -> None:
        """Show a finished step; off a TTY, only when another tenth of the steps is done."""
        line = render_progress(step, total_steps, steps_per_second, remaining_s, self._width)
        if self._tty:
            self._redraw(line)
            return
        decile = step * 10 // total_steps if total_steps else 10
        if decile > self._last_decile:
            self._last_decile = decile
            self._print(line)

    def close(self) -> None:
        """End the line being redrawn, if any."""
        if self._line_length:
            self._stream.write("\n")
            self._stream.flush()
            self._line_length = 0

    def _redraw(self, line: str) -> None:
        padding = " " * max(self._line_length - len(line), 0)
        self._stream.write("\r" + line + padding)
        self._stream.flush()
        self._line_length = len(line)

    def _print(self, line: str) -> None:
        if self._tty and self._line_length:
            padding = " " * max(self._line_length - len(line), 0)
            self._stream.write("\r" + line + padding + "\n")
            self._line_length = 0
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
