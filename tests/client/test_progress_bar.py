"""Progress display: pure rendering, TTY redraw in place, plain lines off a TTY."""

from __future__ import annotations

import io

import pytest

from pointillist import Device, DeviceKind, Preview, Progress, Queued, Started
from pointillist.progress_bar import (
    ProgressBar,
    format_duration,
    render_bar,
    render_progress,
    render_queued,
    render_started,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0:00"),
        (0.2, "0:01"),
        (7, "0:07"),
        (59.5, "1:00"),
        (754, "12:34"),
        (3723, "1:02:03"),
        (None, "--:--"),
        (-1, "--:--"),
        (float("nan"), "--:--"),
        (float("inf"), "--:--"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_render_bar_fills_and_clamps() -> None:
    assert render_bar(0.0, 10) == "[..........]"
    assert render_bar(0.5, 10) == "[#####.....]"
    assert render_bar(1.0, 10) == "[##########]"
    assert render_bar(1.7, 4) == "[####]"
    assert render_bar(-1, 4) == "[....]"


def test_render_progress_uses_the_server_estimate() -> None:
    line = render_progress(7, 28, 2.5, 10.2, width=8)

    assert line == "step  7/28 [##......]  25%  2.50 it/s  ETA 0:11"


def test_render_progress_estimates_from_speed_without_server_estimate() -> None:
    assert render_progress(10, 40, 2.0, None, width=4).endswith("ETA 0:15")


def test_render_progress_with_unknown_speed() -> None:
    assert render_progress(1, 4, 0.0, None, width=4) == "step 1/4 [#...]  25%  0.00 it/s  ETA --:--"


def test_render_queued() -> None:
    assert render_queued(0, None) == "queued: next in line"
    assert render_queued(3, 75) == "queued: position 3, ~1:15 wait"


def test_render_started() -> None:
    gpu = Device(DeviceKind.CUDA, "GPU-1", "NVIDIA H100 80GB HBM3")
    cpu = Device(DeviceKind.CPU, "cpu", "")

    assert (
        render_started(Started("j", "r1", gpu, 2))
        == "running on NVIDIA H100 80GB HBM3 (replica r1, batch of 2)"
    )
    assert render_started(Started("j", "", cpu, 1)) == "running on cpu"


def progress(step: int, total: int) -> Progress:
    return Progress(
        job_id="j",
        step=step,
        total_steps=total,
        elapsed_s=step * 0.5,
        remaining_s=(total - step) * 0.5,
        steps_per_second=2.0,
    )


def test_tty_redraws_one_line_in_place() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, is_tty=True, width=4)

    bar.update(Queued("j", 12, None))
    bar.update(Queued("j", 0, None))
    bar.update(Started("j", "r0", Device(DeviceKind.CPU, "cpu", "cpu"), 1))
    bar.update(progress(1, 2))
    bar.update(Preview("j", 1, []))
    bar.update(progress(2, 2))
    bar.close()

    assert out.getvalue() == (
        "\rqueued: position 12"
        "\rqueued: next in line"
        "\rrunning on cpu (replica r0)\n"
        "\rstep 1/2 [##..]  50%  2.00 it/s  ETA 0:01"
        "\rstep 2/2 [####] 100%  2.00 it/s  ETA 0:00"
        "\n"
    )


def test_tty_pads_a_shorter_line_over_a_longer_one() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, is_tty=True)

    bar.queued(3, 3600)
    bar.queued(0, None)

    first, second = out.getvalue().split("\r")[1:]
    assert second.startswith("queued: next in line")
    assert len(second) == len(first)


def test_tty_close_without_a_line_writes_nothing() -> None:
    out = io.StringIO()
    ProgressBar(out, is_tty=True).close()

    assert out.getvalue() == ""


def test_plain_output_prints_a_line_per_tenth_of_the_steps() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, is_tty=False, width=4)

    for step in range(1, 29):
        bar.update(progress(step, 28))
    bar.close()

    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    steps = [int(line.split()[1].split("/")[0]) for line in lines]
    assert steps == [3, 6, 9, 12, 14, 17, 20, 23, 26, 28]


def test_plain_output_with_few_steps_prints_each_step() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, is_tty=False, width=4)

    for step in range(1, 5):
        bar.update(progress(step, 4))

    assert len(out.getvalue().splitlines()) == 4


def test_plain_output_prints_the_queue_position_when_it_changes() -> None:
    out = io.StringIO()
    bar = ProgressBar(out, is_tty=False)

    for position in (2, 2, 1, 1, 0):
        bar.update(Queued("j", position, None))
    bar.update(Started("j", "r0", Device(DeviceKind.CUDA, "GPU-1", "H100"), 1))

    assert out.getvalue().splitlines() == [
        "queued: position 2",
        "queued: position 1",
        "queued: next in line",
        "running on H100 (replica r0)",
    ]


def test_is_tty_defaults_to_the_stream() -> None:
    out = io.StringIO()  # not a terminal
    bar = ProgressBar(out)

    bar.update(progress(1, 1))

    assert out.getvalue() == "step 1/1 [##############################] 100%  2.00 it/s  ETA 0:00\n"
