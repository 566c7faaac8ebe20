"""The ``pointillist`` command line.

Built-in commands: ``generate`` (stream a generation with a live progress bar, write the images),
``models`` (list the served models), ``status`` (devices, replicas, queues), and the job commands
``submit`` (queue a job, print its id), ``watch`` (follow a job like ``generate``, write its
images), ``job`` (show a job) and ``cancel`` (cancel a job). Other distributions add commands
through the entry-point group ``pointillist.commands``: each entry point is a callable
``register(subparsers) -> None`` that adds its subparser to the ``argparse`` sub-parsers and sets
``func`` with ``set_defaults``; ``func(args: argparse.Namespace)`` returns the exit code (None
means 0). The server distribution registers ``serve`` and ``quantize`` this way.

Exit codes: 0 success, 1 failure, 2 invalid argument or usage, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pointillist.client import DEFAULT_TARGET, Client, GenerationStream
from pointillist.credentials import API_KEY_ENV, TlsSettings
from pointillist.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PointillistError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from pointillist.events import ComponentPrecision, ModelInfo, ModelList, Result
from pointillist.jobs import GenerationParameters, JobInfo, JobState, Priority
from pointillist.progress_bar import ProgressBar
from pointillist.server_status import ServerStatus

__all__ = [
    "BUILTIN_COMMANDS",
    "ENTRY_POINT_GROUP",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "format_bytes",
    "format_error",
    "load_plugins",
    "main",
    "output_paths",
    "render_cancel",
    "render_job",
    "render_models",
    "render_status",
    "resolve_output",
]

ENTRY_POINT_GROUP = "pointillist.commands"
BUILTIN_COMMANDS = ("generate", "models", "status", "submit", "watch", "job", "cancel")
SERVER_ENV = "POINTILLIST_SERVER"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

FORMAT_EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
_FORMAT_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}

PluginFailure = tuple[str, BaseException]
"""An entry point that could not be loaded or registered: its name and the error."""


# ---------------------------------------------------------------------------------------------
# Parser


def build_parser(*, plugins: bool = True) -> tuple[argparse.ArgumentParser, list[PluginFailure]]:
    """The argument parser with the built-in commands and, when ``plugins``, the plugin ones.

    Returns the parser and the plugins that failed to load (they are skipped).
    """
    parser = argparse.ArgumentParser(
        prog="pointillist",
        description="Generate images with a pointillist server (Stable Diffusion 3.5, FP8).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show plugin warnings and error tracebacks"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_TARGET),
        metavar="HOST:PORT",
        help=f"server address (default: ${SERVER_ENV} or {DEFAULT_TARGET})",
    )
    connection.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="deadline of the whole call (default: none)",
    )
    connection.add_argument(
        "-H",
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gRPC metadata to send, e.g. 'authorization=Bearer ...' (repeatable)",
    )
    connection.add_argument(
        "--tls", action="store_true", help="connect with TLS (implied by the --tls-* files)"
    )
    connection.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="CA of the server's certificate (TLS)"
    )
    connection.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="client certificate, for mutual TLS"
    )
    connection.add_argument("--tls-key", type=Path, metavar="PEM", help="client certificate's key")
    connection.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the API key (default: ${API_KEY_ENV}; a key on the command line "
        "would show in the process list)",
    )
    # SUPPRESS keeps a top-level -v when the subcommand's is not given.
    connection.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    _add_generate(subparsers, connection)
    _add_models(subparsers, connection)
    _add_status(subparsers, connection)
    _add_submit(subparsers, connection)
    _add_job_commands(subparsers, connection)
    failures = load_plugins(subparsers) if plugins else []
    return parser, failures


def _add_generate(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    generate = subparsers.add_parser(
        "generate",
        parents=[connection],
        help="generate images from a prompt",
        description="Generate images, showing progress on stderr; prints each path and seed.",
    )
    generate.add_argument("prompt", help="what to draw")
    _add_output(generate, "where to write the image (default: image.<format>)")
    _add_generation_arguments(
        generate, format_help="image format (default: from the --output extension, else png)"
    )
    generate.add_argument(
        "--wait-ready",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="first wait up to SECONDS for the server to come up and report SERVING",
    )
    _add_quiet(generate)
    generate.set_defaults(func=run_generate)


def _add_output(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"{what}; several images are written as NAME-0.EXT, NAME-1.EXT, ...",
    )


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display, only the paths"
    )


def _add_generation_arguments(parser: argparse.ArgumentParser, format_help: str) -> None:
    """The parameters of a generation, shared by ``generate`` and ``submit``."""
    parser.add_argument("--model", default="", help="model id (default: the server's)")
    parser.add_argument("--negative", default="", metavar="PROMPT", help="negative prompt")
    parser.add_argument("--width", type=_count, default=0, help="pixels, a multiple of 16")
    parser.add_argument("--height", type=_count, default=0, help="pixels, a multiple of 16")
    parser.add_argument("--steps", type=_count, default=0, help="denoising steps")
    parser.add_argument(
        "--guidance", type=float, default=None, metavar="SCALE", help="guidance scale"
    )
    parser.add_argument("--seed", type=_seed, default=None, help="seed of the first image")
    parser.add_argument(
        "--num-images", type=_positive_int, default=1, metavar="N", help="images to generate"
    )
    parser.add_argument(
        "--format", choices=sorted(FORMAT_EXTENSIONS), default=None, help=format_help
    )
    parser.add_argument(
        "--quality", type=_quality, default=0, help="JPEG/WebP quality 1-100 (default 90)"
    )
    parser.add_argument(
        "--image", type=_image_file, default=None, metavar="PATH", help="init image (img2img)"
    )
    parser.add_argument(
        "--strength", type=float, default=None, help="0 < s <= 1: share of the steps re-run"
    )
    parser.add_argument(
        "--mask", type=_image_file, default=None, metavar="PATH", help="inpainting: white repaints"
    )
    parser.add_argument(
        "--priority",
        choices=[str(priority) for priority in Priority],
        default=None,
        help="order among the jobs waiting for the model (default: normal)",
    )


def _add_status(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    status = subparsers.add_parser(
        "status",
        parents=[connection],
        help="show devices, replicas and queues",
        description="Show the server's devices and their memory, its replicas, and each "
        "model's queue and footprint.",
    )
    status.set_defaults(func=run_status)


def _add_submit(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    submit = subparsers.add_parser(
        "submit",
        parents=[connection],
        help="queue a generation as a job and print its id",
        description="Queue a generation and print its job id at once; follow it with "
        "'pointillist watch JOB_ID'.",
    )
    submit.add_argument("prompt", help="what to draw")
    _add_generation_arguments(submit, format_help="image format (default: png)")
    submit.set_defaults(func=run_submit)


def _add_job_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    watch = subparsers.add_parser(
        "watch",
        parents=[connection],
        help="follow a job and write its images",
        description="Follow a job from its first event, showing progress on stderr, then write "
        "its images; prints each path and seed. Ctrl-C stops watching, not the job.",
    )
    watch.add_argument("job_id", metavar="JOB_ID", help="the id 'pointillist submit' printed")
    _add_output(watch, "where to write the image (default: image.<the job's format>)")
    _add_quiet(watch)
    watch.set_defaults(func=run_watch)

    job = subparsers.add_parser(
        "job",
        parents=[connection],
        help="show a job's state",
        description="Show a job: state, parameters, times, progress, and result or error.",
    )
    job.add_argument("job_id", metavar="JOB_ID")
    job.set_defaults(func=run_job)

    cancel = subparsers.add_parser(
        "cancel",
        parents=[connection],
        help="cancel a job",
        description="Cancel a job: a queued one never runs, a running one stops at its next "
        "step. A job that already ended is left as it is.",
    )
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.set_defaults(func=run_cancel)


def _add_models(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
) -> None:
    models = subparsers.add_parser(
        "models",
        parents=[connection],
        help="list the served models",
        description="List the models the server serves: precision, devices, limits, defaults.",
    )
    models.set_defaults(func=run_models)


def load_plugins(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[PluginFailure]:
    """Call every ``pointillist.commands`` entry point with ``subparsers``, in name order.

    An entry point that fails to import or to register is skipped and returned as a failure;
    one named like a built-in command is refused.
    """
    failures: list[PluginFailure] = []
    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_name):
        if entry_point.name in BUILTIN_COMMANDS:
            failures.append((entry_point.name, ValueError("a built-in command has this name")))
            continue
        try:
            register: Callable[[Any], None] = entry_point.load()
            register(subparsers)
        except Exception as err:
            failures.append((entry_point.name, err))
    return failures


def _name(entry_point: metadata.EntryPoint) -> str:
    return entry_point.name


# ---------------------------------------------------------------------------------------------
# Entry point


def _connect(args: argparse.Namespace) -> Client:
    """The client the connection flags describe (TLS files, API key file or environment)."""
    tls_files = (args.tls_ca, args.tls_cert, args.tls_key)
    tls = None
    if args.tls or any(path is not None for path in tls_files):
        tls = TlsSettings(root_cert=args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key)
    api_key = args.api_key_file.read_text().strip() if args.api_key_file else None
    return Client(args.server, timeout=args.timeout, metadata=args.header, tls=tls, api_key=api_key)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code; prints errors, never a traceback."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    verbose = _wants_verbose(args_list)
    try:
        return _run(args_list, verbose=verbose)
    except KeyboardInterrupt:
        # The stream's context manager has cancelled the RPC on the way out.
        _warn("cancelled")
        return EXIT_INTERRUPTED


def _run(args_list: list[str], *, verbose: bool) -> int:
    command = _command_of(args_list)
    # Built-in commands do not import plugins: the server's may import torch, which is slow.
    parser, failures = build_parser(plugins=command not in BUILTIN_COMMANDS)
    for name, error in failures:
        if verbose or name == command:
            _warn(f"warning: command {name!r} could not be loaded: {_describe(error)}")
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exit_:
        return _exit_code(exit_)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args) or EXIT_OK
    except PointillistError as err:
        _warn(format_error(err, getattr(args, "server", None)))
        return EXIT_USAGE if isinstance(err, InvalidArgumentError) else EXIT_FAILURE
    except ValueError as err:
        _warn(f"error: {_one_line(str(err))}")
        return EXIT_USAGE
    except OSError as err:
        _warn(f"error: {_describe(err)}")
        return EXIT_FAILURE
    except Exception as err:
        if verbose:
            traceback.print_exc()
        _warn(f"error: unexpected {_describe(err)}")
        return EXIT_FAILURE


def format_error(err: PointillistError, server: str | None = None) -> str:
    """One line for stderr that says what failed and, when known, what to do."""
    message = _one_line(err.message)
    if isinstance(err, InvalidArgumentError):
        violations = "; ".join(
            f"{_one_line(v.field)}: {_one_line(v.description)}" for v in err.field_violations
        )
        return f"error: invalid request: {violations or message}"
    if isinstance(err, ResourceExhaustedError | UnavailableError):
        retry = err.retry_after_s
        hint = f" (retry in {retry:g}s)" if retry is not None else ""
        if isinstance(err, ResourceExhaustedError):
            return f"error: server busy: {message}{hint}"
        where = f" at {server}" if server else ""
        return f"error: server unavailable{where}: {message}{hint}"
    labels: list[tuple[type[PointillistError], str]] = [
        (NotFoundError, "not found"),
        (DeadlineExceededError, "timed out"),
        (CancelledError, "cancelled"),
        (UnauthenticatedError, "unauthenticated (pass credentials with --header)"),
        (PermissionDeniedError, "permission denied"),
    ]
    for kind, label in labels:
        if isinstance(err, kind):
            return f"error: {label}: {message}"
    return f"error: {err.code.name}: {message}"


# ---------------------------------------------------------------------------------------------
# generate


def run_generate(args: argparse.Namespace) -> int:
    """Stream one generation with a progress display, then write and list the images."""
    output_format, output = resolve_output(args.output, args.format)
    bar = None if args.quiet else ProgressBar(sys.stderr)
    with _connect(args) as client:
        if args.wait_ready is not None:
            client.wait_until_serving(args.wait_ready)
        with client.stream(
            args.prompt, output_format=output_format, **_generation_kwargs(args)
        ) as stream:
            result = _follow(stream, bar)
    _write_images(result, output, bar)
    return EXIT_OK


def _generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of a generation from ``_add_generation_arguments``' options, but
    the prompt and the output format."""
    return {
        "model": args.model,
        "negative_prompt": args.negative,
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "seed": args.seed,
        "num_images": args.num_images,
        "quality": args.quality,
        "priority": args.priority,
        "image": args.image,
        "strength": args.strength,
        "mask": args.mask,
    }


def _image_file(value: str) -> str:
    """An image path that exists (read when the request is built)."""
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return value


def _follow(stream: GenerationStream, bar: ProgressBar | None) -> Result:
    """Show a stream's (or watch's) events on the progress bar and return its result."""
    try:
        for event in stream:
            if bar is not None:
                bar.update(event)
    finally:
        if bar is not None:
            bar.close()
    return stream.result()


def _write_images(result: Result, output: Path, bar: ProgressBar | None) -> None:
    """Write the result's images (``output_paths``), print each path and seed, then a summary
    on stderr unless quiet."""
    paths = output_paths(output, len(result.images))
    for image, path in zip(result.images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(f"{path}  seed={image.seed}")
    if bar is not None:
        _warn(_summary(result))


def resolve_output(output: Path | None, output_format: str | None) -> tuple[str, Path]:
    """The format and path to write: the format from ``--format``, else from the path's
    extension, else png; a path without extension gets the format's."""
    if output_format is None:
        suffix = output.suffix.lower() if output is not None else ""
        output_format = _FORMAT_BY_SUFFIX.get(suffix, "png")
    extension = FORMAT_EXTENSIONS[output_format]
    if output is None:
        return output_format, Path("image" + extension)
    if not output.suffix:
        output = output.with_name(output.name + extension)
    return output_format, output


def output_paths(output: Path, count: int) -> list[Path]:
    """``[out.png]`` for one image; ``[out-0.png, out-1.png, ...]`` for several."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(count)]


def _summary(result: Result) -> str:
    timings = result.timings
    device = result.reproducibility.device
    where = f" on {device.name or device.id}" if device.name or device.id else ""
    return (
        f"done in {timings.total_s:.1f}s{where} (queued {timings.queue_wait_s:.1f}s, "
        f"denoising {timings.denoising_s:.1f}s, decoding {timings.decoding_s:.1f}s)"
    )


# ---------------------------------------------------------------------------------------------
# models


def run_models(args: argparse.Namespace) -> int:
    """Print the served models as a table."""
    with _connect(args) as client:
        listing = client.models()
    print(render_models(listing))
    return EXIT_OK


def render_models(listing: ModelList) -> str:
    """A table of the models, one row each, with precision and source lines under each row.

    The default model is marked with ``*``.
    """
    if not listing.models:
        return "no models served"
    header = ("MODEL", "READY", "DEVICES", "MAX SIZE", "MAX STEPS", "MAX IMAGES", "DEFAULTS")
    rows = [_model_row(model, model.id == listing.default_model) for model in listing.models]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [_table_line(header, widths)]
    for model, row in zip(listing.models, rows, strict=True):
        lines.append(_table_line(row, widths))
        lines.append(f"    precision: {_precisions(model.precisions)}")
        policy = model.precision_policy or "?"
        reason = f" ({model.precision_reason})" if model.precision_reason else ""
        lines.append(f"    policy: {policy}{reason}; source: {model.source or '?'}")
    if listing.default_model:
        lines.append(f"* default model: {listing.default_model}")
    return "\n".join(lines)


def _model_row(model: ModelInfo, default: bool) -> tuple[str, ...]:
    limits, defaults = model.limits, model.defaults
    return (
        model.id + (" *" if default else ""),
        "yes" if model.ready else "no",
        ",".join(str(kind) for kind in model.device_kinds) or "-",
        f"{limits.max_width}x{limits.max_height}",
        str(limits.max_steps),
        str(limits.max_images),
        f"{defaults.width}x{defaults.height}, {defaults.steps} steps, "
        f"guidance {defaults.guidance_scale:g}",
    )


def _precisions(precisions: list[ComponentPrecision]) -> str:
    if not precisions:
        return "not known until a replica has loaded"
    parts = []
    for p in precisions:
        value = str(p.weights) if p.weights == p.compute else f"{p.weights} (compute {p.compute})"
        parts.append(f"{p.component} {value}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# status


def run_status(args: argparse.Namespace) -> int:
    """Print the server's devices, replicas and model queues as tables."""
    with _connect(args) as client:
        status = client.server_status()
    print(render_status(status))
    return EXIT_OK


def render_status(status: ServerStatus) -> str:
    """Three tables (devices, replicas, models), each with a blank line before the next."""
    sections: list[list[str]] = []
    if status.devices:
        sections.append(
            _table(
                ("DEVICE", "KIND", "NAME", "USED / TOTAL", "FREE", "CC", "UTIL"),
                [
                    (
                        device.id,
                        str(device.kind),
                        device.name or "-",
                        f"{format_bytes(device.used_bytes)} / {format_bytes(device.total_bytes)}",
                        format_bytes(device.free_bytes),
                        ".".join(map(str, device.compute_capability))
                        if device.compute_capability
                        else "-",
                        f"{device.utilization_percent:.0f}%"
                        if device.utilization_percent is not None
                        else "-",
                    )
                    for device in status.devices
                ],
            )
        )
    else:
        sections.append(["no devices reported"])
    if status.replicas:
        sections.append(
            _table(
                ("REPLICA", "MODEL", "DEVICE", "STATE", "PID", "MEMORY", "JOBS"),
                [
                    (
                        replica.id,
                        replica.model,
                        replica.device_id or "-",
                        str(replica.state),
                        str(replica.pid) if replica.pid is not None else "-",
                        format_bytes(replica.memory_bytes) if replica.memory_bytes else "-",
                        str(replica.running_jobs),
                    )
                    for replica in status.replicas
                ],
            )
        )
    else:
        sections.append(["no replicas"])
    sections.append(
        _table(
            ("MODEL", "QUEUED", "RUNNING", "REPLICAS", "FOOTPRINT"),
            [
                (
                    model.model,
                    str(model.queued_jobs),
                    str(model.running_jobs),
                    str(model.replicas),
                    _footprint(model.footprint_bytes, model.footprint_measured),
                )
                for model in status.models
            ],
        )
        if status.models
        else ["no models"]
    )
    if status.draining:
        sections.append(["draining: finishing accepted jobs, accepting no new ones"])
    return "\n\n".join("\n".join(section) for section in sections)


def _footprint(footprint_bytes: int | None, measured: bool) -> str:
    if footprint_bytes is None:
        return "not known yet"
    return f"{format_bytes(footprint_bytes)} ({'measured' if measured else 'estimated'})"


def format_bytes(count: int) -> str:
    """``79.6 GiB``, ``434 MiB``, ``12 KiB``, ``512 B``."""
    if count >= 2**30:
        return f"{count / 2**30:.1f} GiB"
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.0f} {unit}"
    return f"{count} B"


# ---------------------------------------------------------------------------------------------
# jobs


def run_submit(args: argparse.Namespace) -> int:
    """Queue a job and print its id (alone on stdout, for scripts)."""
    output_format = args.format or "png"
    with _connect(args) as client:
        job_id = client.submit(args.prompt, output_format=output_format, **_generation_kwargs(args))
    print(job_id)
    return EXIT_OK


def run_watch(args: argparse.Namespace) -> int:
    """Follow a job with a progress display, then write and list its images."""
    bar = None if args.quiet else ProgressBar(sys.stderr)
    try:
        with (
            _connect(args) as client,
            client.watch(args.job_id) as watch,
        ):
            result = _follow(watch, bar)
    except KeyboardInterrupt:
        _warn(f"stopped watching; the job runs on ('pointillist cancel {args.job_id}' stops it)")
        return EXIT_INTERRUPTED
    extension = result.images[0].extension if result.images else ".png"
    output = args.output or Path("image" + extension)
    if not output.suffix:
        output = output.with_name(output.name + extension)
    _write_images(result, output, bar)
    return EXIT_OK


def run_job(args: argparse.Namespace) -> int:
    """Print a job's state and details."""
    with _connect(args) as client:
        job = client.get_job(args.job_id)
    print(render_job(job))
    return EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    """Cancel a job and say what became of it."""
    with _connect(args) as client:
        job = client.cancel_job(args.job_id)
    print(render_cancel(job))
    return EXIT_OK


def render_job(job: JobInfo) -> str:
    """``job ID: state`` and one indented line per known detail."""
    parameters = job.parameters
    rows = [("prompt", _one_line(parameters.prompt))]
    if parameters.negative_prompt:
        rows.append(("negative", _one_line(parameters.negative_prompt)))
    rows.append(("parameters", _describe_parameters(parameters)))
    rows.append(("priority", str(job.priority)))
    rows.append(("submitted", _timestamp(job.created_at)))
    for label, moment in (("started", job.started_at), ("finished", job.finished_at)):
        if moment is not None:
            after = (moment - job.created_at).total_seconds()
            rows.append((label, f"{_timestamp(moment)} (+{after:.1f}s)"))
    if job.progress is not None:
        rows.append(("progress", f"step {job.progress.step}/{job.progress.total_steps}"))
    if job.result is not None:
        seeds = ", ".join(str(seed) for seed in job.result.seeds)
        count = len(job.result.images)
        rows.append(("result", f"{count} image{'s' if count != 1 else ''}, seeds {seeds}"))
    if job.error is not None:
        rows.append(("error", f"{job.error.code.name}: {_one_line(job.error.message)}"))
    state = str(job.state)
    if job.cancel_requested and not job.finished:
        state += " (cancel requested)"
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(
        [f"job {job.id}: {state}"] + [f"  {label + ':':<{width}} {value}" for label, value in rows]
    )


def render_cancel(job: JobInfo) -> str:
    """What a cancel did: cancelled, stopping at the next step, or nothing (already ended)."""
    if job.state is JobState.CANCELLED:
        return f"job {job.id}: cancelled"
    if not job.finished:
        return f"job {job.id}: cancel requested; it stops at its next step"
    return f"job {job.id}: already {job.state}, nothing to cancel"


def _describe_parameters(parameters: GenerationParameters) -> str:
    count = parameters.num_images
    parts = [
        parameters.model,
        f"{parameters.width}x{parameters.height}",
        f"{parameters.steps} steps",
    ]
    if parameters.guidance_scale is not None:
        parts.append(f"guidance {parameters.guidance_scale:g}")
    if parameters.seed is not None:
        parts.append(f"seed {parameters.seed}")
    parts.append(f"{count} {parameters.output_format} image{'s' if count != 1 else ''}")
    return ", ".join(parts)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [_table_line(row, widths) for row in [header, *rows]]


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


# ---------------------------------------------------------------------------------------------
# Small parts


def _wants_verbose(argv: Sequence[str]) -> bool:
    head = argv[: argv.index("--")] if "--" in argv else argv
    return "-v" in head or "--verbose" in head


def _command_of(argv: Sequence[str]) -> str | None:
    # The top-level options take no value, so the first non-option word is the command.
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _exit_code(exit_: SystemExit) -> int:
    if exit_.code is None:
        return EXIT_OK
    return exit_.code if isinstance(exit_.code, int) else EXIT_FAILURE


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(err: BaseException) -> str:
    text = _one_line(str(err))
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _version() -> str:
    try:
        return metadata.version("pointillist-client")
    except metadata.PackageNotFoundError:
        return "unknown"


def _integer(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def _count(text: str) -> int:
    return _integer(text, 0, 2**32 - 1, ">= 0")


def _positive_int(text: str) -> int:
    return _integer(text, 1, 2**32 - 1, ">= 1")


def _quality(text: str) -> int:
    return _integer(text, 0, 100, "1-100 (0: the default, 90)")


def _seed(text: str) -> int:
    return _integer(text, 0, 2**64 - 1, "between 0 and 2**64-1")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lower(), value


if __name__ == "__main__":
    sys.exit(main())
