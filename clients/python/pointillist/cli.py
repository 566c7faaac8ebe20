"""The ``pointillist`` command line.

Built-in commands: ``generate`` (stream a generation with a live progress bar, write the images)
and ``models`` (list the served models). Other distributions add commands through the entry-point
group ``pointillist.commands``: each entry point is a callable ``register(subparsers) -> None``
that adds its subparser to the ``argparse`` sub-parsers and sets ``func`` with ``set_defaults``;
``func(args: argparse.Namespace)`` returns the exit code (None means 0). The server distribution
registers ``serve`` and ``quantize`` this way.

Exit codes: 0 success, 1 failure, 2 invalid argument or usage, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pointillist.client import DEFAULT_TARGET, Client
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
from pointillist.progress_bar import ProgressBar

__all__ = [
    "BUILTIN_COMMANDS",
    "ENTRY_POINT_GROUP",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "format_error",
    "load_plugins",
    "main",
    "output_paths",
    "render_models",
    "resolve_output",
]

ENTRY_POINT_GROUP = "pointillist.commands"
BUILTIN_COMMANDS = ("generate", "models")
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
    # SUPPRESS keeps a top-level -v when the subcommand's is not given.
    connection.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )

    _add_generate(subparsers, connection)
    _add_models(subparsers, connection)
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
    generate.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="PATH",
        help="where to write the image (default: image.<format>); several images are written "
        "as NAME-0.EXT, NAME-1.EXT, ...",
    )
    generate.add_argument("--model", default="", help="model id (default: the server's)")
    generate.add_argument("--negative", default="", metavar="PROMPT", help="negative prompt")
    generate.add_argument("--width", type=_count, default=0, help="pixels, a multiple of 16")
    generate.add_argument("--height", type=_count, default=0, help="pixels, a multiple of 16")
    generate.add_argument("--steps", type=_count, default=0, help="denoising steps")
    generate.add_argument(
        "--guidance", type=float, default=None, metavar="SCALE", help="guidance scale"
    )
    generate.add_argument("--seed", type=_seed, default=None, help="seed of the first image")
    generate.add_argument(
        "--num-images", type=_positive_int, default=1, metavar="N", help="images to generate"
    )
    generate.add_argument(
        "--format",
        choices=sorted(FORMAT_EXTENSIONS),
        default=None,
        help="image format (default: from the --output extension, else png)",
    )
    generate.add_argument(
        "--quality", type=_quality, default=0, help="JPEG/WebP quality 1-100 (default 90)"
    )
    generate.add_argument(
        "--wait-ready",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="first wait up to SECONDS for the server to come up and report SERVING",
    )
    generate.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display, only the paths"
    )
    generate.set_defaults(func=run_generate)


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
    with Client(args.server, timeout=args.timeout, metadata=args.header) as client:
        if args.wait_ready is not None:
            client.wait_until_serving(args.wait_ready)
        result = _stream_with_progress(client, args, output_format, bar)
    paths = output_paths(output, len(result.images))
    for image, path in zip(result.images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(f"{path}  seed={image.seed}")
    if bar is not None:
        _warn(_summary(result))
    return EXIT_OK


def _stream_with_progress(
    client: Client, args: argparse.Namespace, output_format: str, bar: ProgressBar | None
) -> Result:
    with client.stream(
        args.prompt,
        model=args.model,
        negative_prompt=args.negative,
        width=args.width,
        height=args.height,
        steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_images=args.num_images,
        output_format=output_format,
        quality=args.quality,
    ) as stream:
        try:
            for event in stream:
                if bar is not None:
                    bar.update(event)
        finally:
            if bar is not None:
                bar.close()
        return stream.result()


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
    with Client(args.server, timeout=args.timeout, metadata=args.header) as client:
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
