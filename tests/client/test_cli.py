"""The pointillist command line: parsing, output naming, error lines and exit codes, plugins."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from pointillist import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PointillistError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from pointillist.cli import (
    build_parser,
    format_error,
    main,
    output_paths,
    render_models,
    resolve_output,
)
from pointillist.conversion import model_list_from_proto
from pointillist.v1 import generation_pb2 as pb


@pytest.fixture
def refused_target() -> Iterator[str]:
    """An address with a bound but not listening socket: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


# -- parsing ------------------------------------------------------------------------------------


def test_generate_arguments() -> None:
    parser, failures = build_parser(plugins=False)

    args = parser.parse_args(
        [
            "generate",
            "a fox in the snow",
            "-o",
            "fox.jpg",
            "--server",
            "gpu-box:50051",
            "--model",
            "sd35-medium",
            "--negative",
            "blurry",
            "--width",
            "1024",
            "--height",
            "768",
            "--steps",
            "28",
            "--guidance",
            "4.5",
            "--seed",
            "42",
            "--num-images",
            "2",
            "--format",
            "jpeg",
            "--quality",
            "85",
            "--timeout",
            "60",
            "-H",
            "Authorization=Bearer t=1",
        ]
    )

    assert failures == []
    assert args.prompt == "a fox in the snow"
    assert args.output == Path("fox.jpg")
    assert args.server == "gpu-box:50051"
    assert (args.model, args.negative) == ("sd35-medium", "blurry")
    assert (args.width, args.height, args.steps) == (1024, 768, 28)
    assert (args.guidance, args.seed, args.num_images) == (4.5, 42, 2)
    assert (args.format, args.quality, args.timeout) == ("jpeg", 85, 60.0)
    assert args.header == [("authorization", "Bearer t=1")]
    assert not args.verbose


def test_generate_defaults_mean_model_defaults() -> None:
    parser, _ = build_parser(plugins=False)

    args = parser.parse_args(["generate", "a fox"])

    assert args.output is None
    assert (args.width, args.height, args.steps, args.quality) == (0, 0, 0, 0)
    assert (args.guidance, args.seed, args.format, args.timeout) == (None, None, None, None)
    assert args.num_images == 1


def test_server_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTILLIST_SERVER", "10.0.0.7:6000")
    parser, _ = build_parser(plugins=False)

    assert parser.parse_args(["models"]).server == "10.0.0.7:6000"


def test_server_default_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POINTILLIST_SERVER", raising=False)
    parser, _ = build_parser(plugins=False)

    assert parser.parse_args(["models"]).server == "127.0.0.1:50051"


def test_verbose_before_or_after_the_command() -> None:
    parser, _ = build_parser(plugins=False)

    assert parser.parse_args(["-v", "models"]).verbose
    assert parser.parse_args(["models", "--verbose"]).verbose


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["generate"], "required: prompt"),
        (["generate", "x", "--width", "-16"], "must be >= 0"),
        (["generate", "x", "--steps", "many"], "expected an integer"),
        (["generate", "x", "--num-images", "0"], "must be >= 1"),
        (["generate", "x", "--quality", "101"], "must be 1-100"),
        (["generate", "x", "--seed", str(2**64)], "between 0 and 2**64-1"),
        (["generate", "x", "--format", "gif"], "invalid choice"),
        (["generate", "x", "--timeout", "0"], "must be > 0"),
        (["generate", "x", "-H", "no-equals"], "expected KEY=VALUE"),
        (["models", "--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2

    assert complaint in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2

    assert "generate" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pointillist ")
    assert main(["generate", "--help"]) == 0
    assert "--num-images" in capsys.readouterr().out


# -- output files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "output_format", "expected"),
    [
        (None, None, ("png", Path("image.png"))),
        (None, "jpeg", ("jpeg", Path("image.jpg"))),
        (Path("cat.webp"), None, ("webp", Path("cat.webp"))),
        (Path("cat.JPEG"), None, ("jpeg", Path("cat.JPEG"))),
        (Path("out/cat"), "webp", ("webp", Path("out/cat.webp"))),
        (Path("cat.tiff"), None, ("png", Path("cat.tiff"))),
        (Path("cat.png"), "jpeg", ("jpeg", Path("cat.png"))),
    ],
)
def test_resolve_output(
    output: Path | None, output_format: str | None, expected: tuple[str, Path]
) -> None:
    assert resolve_output(output, output_format) == expected


def test_output_paths() -> None:
    assert output_paths(Path("out.png"), 1) == [Path("out.png")]
    assert output_paths(Path("dir/out.png"), 3) == [
        Path("dir/out-0.png"),
        Path("dir/out-1.png"),
        Path("dir/out-2.png"),
    ]


# -- errors -------------------------------------------------------------------------------------


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=seconds))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def test_invalid_argument_lists_every_violation_on_one_line() -> None:
    error = InvalidArgumentError(
        "2 invalid fields",
        code=grpc.StatusCode.INVALID_ARGUMENT,
        details=[
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="parameters.width", description="must be a multiple of 16"
                    ),
                    error_details_pb2.BadRequest.FieldViolation(
                        field="parameters.steps", description="must be at most 50,\ngot 80"
                    ),
                ]
            )
        ],
    )

    assert format_error(error) == (
        "error: invalid request: parameters.width: must be a multiple of 16; "
        "parameters.steps: must be at most 50, got 80"
    )


def test_invalid_argument_without_violations_shows_the_message() -> None:
    error = InvalidArgumentError("prompt is empty", code=grpc.StatusCode.INVALID_ARGUMENT)

    assert format_error(error) == "error: invalid request: prompt is empty"


def test_retryable_errors_show_the_delay() -> None:
    busy = ResourceExhaustedError(
        "queue full", code=grpc.StatusCode.RESOURCE_EXHAUSTED, details=[retry_info(2.5)]
    )
    warming = UnavailableError(
        "warming up", code=grpc.StatusCode.UNAVAILABLE, details=[retry_info(30)]
    )
    down = UnavailableError("connection refused", code=grpc.StatusCode.UNAVAILABLE)

    assert format_error(busy) == "error: server busy: queue full (retry in 2.5s)"
    assert (
        format_error(warming, "h:1")
        == "error: server unavailable at h:1: warming up (retry in 30s)"
    )
    assert format_error(down) == "error: server unavailable: connection refused"


def test_other_errors() -> None:
    assert (
        format_error(NotFoundError("no model 'x'", code=grpc.StatusCode.NOT_FOUND))
        == "error: not found: no model 'x'"
    )
    assert (
        format_error(
            DeadlineExceededError("Deadline Exceeded", code=grpc.StatusCode.DEADLINE_EXCEEDED)
        )
        == "error: timed out: Deadline Exceeded"
    )
    assert format_error(
        UnauthenticatedError("no token", code=grpc.StatusCode.UNAUTHENTICATED)
    ).startswith("error: unauthenticated")
    assert (
        format_error(PointillistError("not yet", code=grpc.StatusCode.FAILED_PRECONDITION))
        == "error: FAILED_PRECONDITION: not yet"
    )


def test_generate_against_a_dead_server_exits_1(
    refused_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "fox.png"

    code = main(
        ["generate", "a fox", "--server", refused_target, "--timeout", "5", "-o", str(output)]
    )

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith(f"error: server unavailable at {refused_target}: ")
    assert "Traceback" not in captured.err
    assert not output.exists()


def test_models_against_a_dead_server_exits_1(
    refused_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--server", refused_target, "--timeout", "5"]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"error: server unavailable at {refused_target}: ")
    assert err.count("\n") == 1


# -- models table -------------------------------------------------------------------------------


def test_render_models() -> None:
    response = pb.ListModelsResponse(
        default_model="sd35-medium",
        models=[
            pb.ModelInfo(
                id="sd35-medium",
                source="/models/sd35-medium",
                precision_policy="fp8",
                precisions=[
                    pb.ComponentPrecision(
                        component="transformer",
                        weights=pb.PRECISION_FP8_E4M3,
                        compute=pb.PRECISION_BF16,
                    ),
                    pb.ComponentPrecision(
                        component="vae", weights=pb.PRECISION_BF16, compute=pb.PRECISION_BF16
                    ),
                ],
                precision_reason="fp8: asked for; CUDA 9.0",
                device_kinds=[pb.DEVICE_KIND_CUDA],
                limits=pb.ModelLimits(max_width=1536, max_height=1536, max_steps=100, max_images=4),
                defaults=pb.ModelDefaults(width=1024, height=1024, steps=40, guidance_scale=4.5),
                ready=True,
            ),
            pb.ModelInfo(
                id="demo",
                source="demo",
                precision_policy="auto",
                device_kinds=[pb.DEVICE_KIND_CPU],
                limits=pb.ModelLimits(max_width=256, max_height=256, max_steps=50, max_images=2),
                defaults=pb.ModelDefaults(width=64, height=64, steps=4, guidance_scale=7.2),
                ready=False,
            ),
        ],
    )

    table = render_models(model_list_from_proto(response))

    assert table.splitlines() == [
        "MODEL          READY  DEVICES  MAX SIZE   MAX STEPS  MAX IMAGES  DEFAULTS",
        "sd35-medium *  yes    cuda     1536x1536  100        4           "
        "1024x1024, 40 steps, guidance 4.5",
        "    precision: transformer fp8_e4m3 (compute bf16), vae bf16",
        "    policy: fp8 (fp8: asked for; CUDA 9.0); source: /models/sd35-medium",
        "demo           no     cpu      256x256    50         2           "
        "64x64, 4 steps, guidance 7.2",
        "    precision: not known until a replica has loaded",
        "    policy: auto; source: demo",
        "* default model: sd35-medium",
    ]


def test_render_no_models() -> None:
    assert render_models(model_list_from_proto(pb.ListModelsResponse())) == "no models served"


# -- plugins ------------------------------------------------------------------------------------

PLUGIN_MODULE = "pointillist_cli_test_plugins"
BROKEN_MODULE = "pointillist_cli_test_broken_plugin"


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real distribution on sys.path whose entry points add commands to the CLI."""
    (tmp_path / f"{PLUGIN_MODULE}.py").write_text(
        textwrap.dedent(
            """
            import grpc
            from google.rpc import error_details_pb2
            from pointillist import InvalidArgumentError, UnavailableError


            def register_hello(subparsers):
                parser = subparsers.add_parser("hello", help="say hello")
                parser.add_argument("--name", default="world")
                parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)


            def register_silent(subparsers):
                subparsers.add_parser("silent").set_defaults(func=lambda args: None)


            def _raise(error):
                def func(args):
                    raise error
                return func


            def register_failing(subparsers):
                violation = error_details_pb2.BadRequest.FieldViolation(
                    field="config", description="missing"
                )
                errors = {
                    "interrupt": KeyboardInterrupt(),
                    "crash": RuntimeError("boom"),
                    "unavailable": UnavailableError(
                        "draining", code=grpc.StatusCode.UNAVAILABLE
                    ),
                    "invalid": InvalidArgumentError(
                        "bad config",
                        code=grpc.StatusCode.INVALID_ARGUMENT,
                        details=[error_details_pb2.BadRequest(field_violations=[violation])],
                    ),
                }
                for name, error in errors.items():
                    subparsers.add_parser(name).set_defaults(func=_raise(error))
            """
        )
    )
    (tmp_path / f"{BROKEN_MODULE}.py").write_text('raise ImportError("this plugin needs torch")\n')
    dist_info = tmp_path / "pointillist_cli_test_plugins-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pointillist-cli-test-plugins\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""
            [pointillist.commands]
            hello = {PLUGIN_MODULE}:register_hello
            silent = {PLUGIN_MODULE}:register_silent
            failing = {PLUGIN_MODULE}:register_failing
            broken = {BROKEN_MODULE}:register
            missing = {PLUGIN_MODULE}:no_such_function
            models = {PLUGIN_MODULE}:register_hello
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in (PLUGIN_MODULE, BROKEN_MODULE):
        sys.modules.pop(name, None)


@pytest.mark.usefixtures("plugins")
def test_plugin_command_runs_and_returns_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hello", "--name", "pointillist"]) == 3
    assert main(["silent"]) == 0

    captured = capsys.readouterr()
    assert captured.out == "hello pointillist\n"
    assert "could not be loaded" not in captured.err  # skipped quietly without --verbose


@pytest.mark.usefixtures("plugins")
def test_help_lists_plugin_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0

    out = capsys.readouterr().out
    assert "hello" in out
    assert "say hello" in out
    assert "broken" not in out


@pytest.mark.usefixtures("plugins")
def test_verbose_warns_about_plugins_that_failed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "hello"]) == 3

    err = capsys.readouterr().err
    assert (
        "warning: command 'broken' could not be loaded: ImportError: this plugin needs torch" in err
    )
    assert "warning: command 'missing' could not be loaded: AttributeError" in err
    assert "warning: command 'models' could not be loaded" in err  # a built-in name is refused


@pytest.mark.usefixtures("plugins")
def test_running_a_broken_plugin_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["broken"]) == 2

    err = capsys.readouterr().err
    assert "warning: command 'broken' could not be loaded: ImportError" in err
    assert "invalid choice: 'broken'" in err


@pytest.mark.usefixtures("plugins")
def test_builtin_commands_do_not_load_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    main(["-v", "models", "--server", "127.0.0.1:1", "--timeout", "0.001"])

    assert "could not be loaded" not in capsys.readouterr().err
    assert PLUGIN_MODULE not in sys.modules


@pytest.mark.usefixtures("plugins")
@pytest.mark.parametrize(
    ("command", "code", "message"),
    [
        ("interrupt", 130, "cancelled"),
        ("crash", 1, "error: unexpected RuntimeError: boom"),
        ("unavailable", 1, "error: server unavailable: draining"),
        ("invalid", 2, "error: invalid request: config: missing"),
    ],
)
def test_exit_codes_of_failing_commands(
    command: str, code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command]) == code

    err = capsys.readouterr().err
    assert err.endswith(message + "\n")
    assert "Traceback" not in err


@pytest.mark.usefixtures("plugins")
def test_verbose_shows_the_traceback_of_an_unexpected_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-v", "crash"]) == 1

    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith("error: unexpected RuntimeError: boom\n")
