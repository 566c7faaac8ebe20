"""The server's subcommands of the ``pointillist`` CLI: ``serve`` and ``quantize``.

The client package owns the CLI; these register through the ``pointillist.commands`` entry
point group so that the client installs without torch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from server import logs
from server.logs import LOG_FORMATS
from server.settings import ConfigError, ServerSettings, load_settings

log = logging.getLogger("pointillist.server")


def register_serve(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC server (no arguments: the demo model at 127.0.0.1:50051)",
    )
    parser.add_argument("--config", type=Path, help="TOML config file (env POINTILLIST_CONFIG)")
    parser.add_argument("--address", help="host:port to bind (env POINTILLIST_ADDRESS)")
    parser.add_argument(
        "--model", dest="model_source", help="serve one model: 'demo', a local folder or a hub id"
    )
    parser.add_argument("--model-id", help="id of the --model model (default: the folder name)")
    parser.add_argument("--precision", choices=["auto", "fp8", "bf16", "fp16", "fp32"])
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--inventory", help="devices: auto (NVML, else CPU), nvml, cpu, or a simulated TOML file"
    )
    parser.add_argument("--queue-capacity", type=int, help="jobs waiting per model (default 32)")
    parser.add_argument("--max-batch-size", type=int, help="requests merged per call (default 4)")
    parser.add_argument(
        "--reserve-gib", type=float, help="memory kept free on every device (default 1)"
    )
    parser.add_argument(
        "--drain-grace", dest="drain_grace_s", type=float, help="seconds to finish jobs on SIGTERM"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (0: off, default)"
    )
    parser.add_argument(
        "--web-address",
        help="host:port of the browser port (Connect, gRPC-Web and the page at /); off by default",
    )
    parser.add_argument(
        "--web-allowed-origin",
        dest="web_allowed_origins",
        action="append",
        help="an origin allowed to call the browser port cross-origin (CORS); repeat; '*': any",
    )
    parser.add_argument(
        "--job-store", help="memory (default) or a redis:// URL shared by several servers"
    )
    parser.add_argument("--log-level", default=os.environ.get("POINTILLIST_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("POINTILLIST_LOG_FORMAT", "text"),
        help="text (default) or json: one object a line with trace, span and job ids",
    )
    parser.set_defaults(func=run_serve)


def register_quantize(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quantize", help="write an FP8 checkpoint of a model that loads without its 16-bit weights"
    )
    parser.add_argument("source", help="'demo', a local diffusers folder, or a hub id")
    parser.add_argument("dest", type=Path, help="folder to write")
    parser.add_argument("--revision", help="hub revision of SOURCE")
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(func=run_quantize)


def run_serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level, args.log_format)
    flags = {
        key: getattr(args, key)
        for key in (
            "address",
            "model_source",
            "model_id",
            "precision",
            "device",
            "inventory",
            "queue_capacity",
            "max_batch_size",
            "reserve_gib",
            "drain_grace_s",
            "metrics_port",
            "web_address",
            "web_allowed_origins",
            "job_store",
        )
        if getattr(args, key) is not None
    }
    if "web_allowed_origins" in flags:
        flags["web_allowed_origins"] = tuple(flags["web_allowed_origins"])
    try:
        settings = load_settings(args.config, overrides=flags)
    except ConfigError as exc:
        print(f"pointillist serve: configuration error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings))


async def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM or SIGINT, then drain. Exit 0 after a clean drain, 1 if startup failed."""
    from scheduler.shared_jobs import JobStoreUnavailableError
    from server.app import create_server
    from server.telemetry import TelemetryConfigError

    try:
        running = await create_server(settings)
    except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
        print(f"pointillist serve: cannot listen on {settings.address}: {exc}", file=sys.stderr)
        return 1
    except JobStoreUnavailableError as exc:
        print(f"pointillist serve: {exc}", file=sys.stderr)
        return 1
    except (TelemetryConfigError, OSError) as exc:  # a bad OTEL_* value, a taken metrics port
        print(f"pointillist serve: telemetry: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting now")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running.ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if running.ready.done() and not running.ready.cancelled() and running.ready.exception():
        log.error("startup failed: %s", running.ready.exception())
        stopping.cancel()
        await running.drain(0.0)
        return 1
    await stopping
    await running.drain(settings.drain_grace_s)
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    from engine.fp8_checkpoint import quantize_checkpoint
    from engine.loading import ModelLoadError

    try:
        quantize_checkpoint(args.source, args.dest, revision=args.revision)
    except ModelLoadError as exc:
        print(f"pointillist quantize: {exc}", file=sys.stderr)
        return 1
    print(f"wrote FP8 checkpoint to {args.dest}")
    return 0


def _configure_logging(level: str) -> None:
    with contextlib.suppress(ValueError):
        logging.basicConfig(
            level=level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
