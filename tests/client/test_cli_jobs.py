"""`pointillist status`, `submit`, `watch`, `job` and `cancel`: parsing, rendering, and runs
against the real demo server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from PIL import Image

from pointillist import (
    CancelledError,
    Client,
    DeviceKind,
    DeviceProcess,
    DeviceStatus,
    GenerationParameters,
    JobInfo,
    JobState,
    ModelQueueStatus,
    Priority,
    Progress,
    ReplicaState,
    ReplicaStatus,
    ServerStatus,
)
from pointillist.cli import (
    build_parser,
    format_bytes,
    main,
    render_cancel,
    render_job,
    render_status,
)
from tests.holds import new_hold

GIB = 2**30
# With a prompt from new_hold: a job held after step 1 until cancelled (tests/holds.py).
HELD = ["--width", "64", "--height", "64", "--steps", "4", "--seed", "7"]


# -- parsing ------------------------------------------------------------------------------------


def test_submit_takes_the_generation_options_and_a_priority() -> None:
    parser, _ = build_parser(plugins=False)

    args = parser.parse_args(
        ["submit", "a fox", "--steps", "28", "--seed", "3", "--priority", "low", "--format", "webp"]
    )

    assert (args.prompt, args.steps, args.seed, args.priority) == ("a fox", 28, 3, "low")
    assert args.format == "webp"
    assert parser.parse_args(["submit", "a fox"]).priority is None
    assert parser.parse_args(["generate", "a fox", "--priority", "high"]).priority == "high"


def test_job_commands_take_a_job_id() -> None:
    parser, _ = build_parser(plugins=False)

    watch = parser.parse_args(["watch", "abc", "-o", "out.png", "-q"])
    assert (watch.job_id, watch.output, watch.quiet) == ("abc", Path("out.png"), True)
    assert parser.parse_args(["job", "abc"]).job_id == "abc"
    assert parser.parse_args(["cancel", "abc"]).job_id == "abc"
    assert parser.parse_args(["status"]).func.__name__ == "run_status"


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["submit", "x", "--priority", "urgent"], "invalid choice"),
        (["watch"], "required: JOB_ID"),
        (["cancel"], "required: JOB_ID"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert complaint in capsys.readouterr().err


# -- rendering ----------------------------------------------------------------------------------


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (512, 12 * 1024, 434 * 2**20, int(79.6 * GIB))] == [
        "512 B",
        "12 KiB",
        "434 MiB",
        "79.6 GiB",
    ]


def test_render_status() -> None:
    status = ServerStatus(
        devices=[
            DeviceStatus(
                "GPU-1", DeviceKind.CUDA, "NVIDIA H100", 80 * GIB, 50 * GIB, 30 * GIB, (9, 0), 55.0,
                [DeviceProcess(10, GIB)],
            ),
            DeviceStatus(
                "cpu", DeviceKind.CPU, "AMD EPYC", 64 * GIB, 60 * GIB, 4 * GIB, None, None, []
            ),
        ],
        replicas=[
            ReplicaStatus("sd35-0", "sd35", "GPU-1", ReplicaState.BUSY, 10, 9 * GIB, 2),
            ReplicaStatus("sd35-1", "sd35", "", ReplicaState.STARTING, None, 0, 0),
        ],
        models=[
            ModelQueueStatus("sd35", 3, 2, 2, 9 * GIB, True),
            ModelQueueStatus("tiny", 0, 0, 0, None, False),
        ],
        draining=True,
    )  # fmt: skip

    assert render_status(status).splitlines() == [
        "DEVICE  KIND  NAME         USED / TOTAL         FREE      CC   UTIL",
        "GPU-1   cuda  NVIDIA H100  30.0 GiB / 80.0 GiB  50.0 GiB  9.0  55%",
        "cpu     cpu   AMD EPYC     4.0 GiB / 64.0 GiB   60.0 GiB  -    -",
        "",
        "REPLICA  MODEL  DEVICE  STATE     PID  MEMORY   JOBS",
        "sd35-0   sd35   GPU-1   busy      10   9.0 GiB  2",
        "sd35-1   sd35   -       starting  -    -        0",
        "",
        "MODEL  QUEUED  RUNNING  REPLICAS  FOOTPRINT",
        "sd35   3       2        2         9.0 GiB (measured)",
        "tiny   0       0        0         not known yet",
        "",
        "draining: finishing accepted jobs, accepting no new ones",
    ]


def test_render_status_without_devices_or_replicas() -> None:
    text = render_status(ServerStatus(devices=[], replicas=[], models=[], draining=False))

    assert text.splitlines() == ["no devices reported", "", "no replicas", "", "no models"]


def job_info(**overrides: object) -> JobInfo:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    values: dict[str, object] = {
        "id": "j1",
        "state": JobState.RUNNING,
        "parameters": GenerationParameters(
            model="demo",
            prompt="a fox\nin the snow",
            negative_prompt="",
            width=64,
            height=64,
            steps=20,
            guidance_scale=4.5,
            seed=7,
            num_images=2,
            output_format="png",
            quality=90,
            preview_every=0,
            preview_size=0,
        ),
        "priority": Priority.LOW,
        "created_at": created,
        "started_at": created.replace(second=6),
        "finished_at": None,
        "progress": Progress("j1", 5, 20, 1.0, 3.0, 5.0),
        "cancel_requested": False,
        "result": None,
        "error": None,
    }
    values.update(overrides)
    return JobInfo(**values)  # type: ignore[arg-type]


def test_render_a_running_job() -> None:
    assert render_job(job_info()).splitlines() == [
        "job j1: running",
        "  prompt:     a fox in the snow",
        "  parameters: demo, 64x64, 20 steps, guidance 4.5, seed 7, 2 png images",
        "  priority:   low",
        "  submitted:  2026-01-02 03:04:05 UTC",
        "  started:    2026-01-02 03:04:06 UTC (+1.0s)",
        "  progress:   step 5/20",
    ]


def test_render_a_cancelled_job_shows_its_error() -> None:
    error = CancelledError("the job was cancelled", code=grpc.StatusCode.CANCELLED)
    text = render_job(
        job_info(
            state=JobState.CANCELLED,
            cancel_requested=True,
            finished_at=datetime(2026, 1, 2, 3, 4, 8, tzinfo=UTC),
            error=error,
        )
    )

    assert text.splitlines()[0] == "job j1: cancelled"
    assert "  finished:   2026-01-02 03:04:08 UTC (+3.0s)" in text.splitlines()
    assert text.splitlines()[-1] == "  error:      CANCELLED: the job was cancelled"


def test_render_cancel() -> None:
    assert render_cancel(job_info(state=JobState.CANCELLED)) == "job j1: cancelled"
    assert render_cancel(job_info(cancel_requested=True)) == (
        "job j1: cancel requested; it stops at its next step"
    )
    assert render_cancel(job_info(state=JobState.SUCCEEDED)) == (
        "job j1: already succeeded, nothing to cancel"
    )


# -- against the server -------------------------------------------------------------------------


def test_status_prints_the_demo_replica_and_model(
    demo_server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--server", demo_server.address, "--timeout", "30"]) == 0

    out = capsys.readouterr().out
    assert "REPLICA" in out and "MODEL" in out
    replica_line = next(line for line in out.splitlines() if line.startswith("demo-"))
    assert " ready " in replica_line
    assert any(line.startswith("demo ") and "(measured)" in line for line in out.splitlines())


def test_submit_prints_the_id_then_watch_writes_the_images(
    demo_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", demo_server.address, "--timeout", "120"]
    submit = ["submit", "a fox", "--steps", "3", "--width", "64", "--height", "64", "--seed", "5",
              "--num-images", "2", "--format", "jpeg", "--priority", "high"]  # fmt: skip
    assert main([*submit, *server]) == 0
    job_id = capsys.readouterr().out.strip()
    assert len(job_id) >= 8 and " " not in job_id

    assert main(["watch", job_id, *server, "-o", str(tmp_path / "fox")]) == 0
    captured = capsys.readouterr()
    paths = [tmp_path / "fox-0.jpg", tmp_path / "fox-1.jpg"]
    assert captured.out.splitlines() == [f"{paths[0]}  seed=5", f"{paths[1]}  seed=6"]
    assert "3/3" in captured.err
    assert all(Image.open(path).format == "JPEG" for path in paths)

    assert main(["job", job_id, *server]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"job {job_id}: succeeded")
    assert "  priority:   " in shown and "seeds 5, 6" in shown


def test_cancel_a_running_job_then_watch_and_job_report_it(
    demo_server, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["--server", demo_server.address, "--timeout", "120"]
    assert main(["submit", new_hold("cli-cancel").prompt, *server, *HELD]) == 0
    job_id = capsys.readouterr().out.strip()
    with Client(demo_server.address, timeout=120) as client, client.watch(job_id) as watch:
        next(event for event in watch if isinstance(event, Progress))

    assert main(["cancel", job_id, *server]) == 0
    assert capsys.readouterr().out.strip() == f"job {job_id}: cancelled"
    assert main(["watch", job_id, *server, "-q"]) == 1
    assert capsys.readouterr().err.startswith("error: cancelled: ")
    assert main(["job", job_id, *server]) == 0
    assert "error:      CANCELLED: " in capsys.readouterr().out
    assert main(["cancel", job_id, *server]) == 0
    assert capsys.readouterr().out.strip() == f"job {job_id}: cancelled"
    assert demo_server.active_jobs() == []


def test_unknown_job_exits_1_with_not_found(demo_server, capsys: pytest.CaptureFixture[str]):
    for command in ("watch", "job", "cancel"):
        assert main([command, "no-such-job", "--server", demo_server.address]) == 1
        assert capsys.readouterr().err.startswith("error: not found: unknown job 'no-such-job'")


def test_submit_with_a_bad_field_exits_2_and_names_it(
    demo_server, capsys: pytest.CaptureFixture[str]
):
    assert main(["submit", "x", "--server", demo_server.address, "--width", "100"]) == 2
    assert "parameters.width" in capsys.readouterr().err
