"""`make gen` works: buf generates Go, Java, Python and TypeScript from proto/ offline, with the
local plugins (Debian's protoc and gRPC plugins, protoc-gen-es from npm), and the generated
Python imports and talks to a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.background import ServerThread

REPO_ROOT = Path(__file__).resolve().parents[2]
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUF.exists():
        pytest.fail("buf is missing: `make node-deps` installs it from package.json")
    out = tmp_path_factory.mktemp("gen")
    subprocess.run(
        [str(BUF), "generate", "--template", "buf.gen.yaml", "--output", str(out)],
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    return out / "build" / "gen"


@pytest.mark.parametrize(
    "path",
    [
        "go/pointillist/v1/generation.pb.go",
        "go/pointillist/v1/generation_grpc.pb.go",
        "go/pointillist/v1/jobs_grpc.pb.go",
        "java/dev/pointillist/v1/GenerationServiceGrpc.java",
        "java/dev/pointillist/v1/StreamGenerateRequest.java",
        "python/pointillist/v1/generation_pb2.py",
        "python/pointillist/v1/generation_pb2.pyi",
        "python/pointillist/v1/jobs_pb2_grpc.py",
        "ts/pointillist/v1/generation_pb.ts",
        "ts/pointillist/v1/jobs_pb.ts",
    ],
)
def test_every_language_gets_messages_and_services(generated: Path, path: str) -> None:
    text = (generated / path).read_text()
    assert "StreamGenerate" in text or "GenerationParameters" in text or "JobService" in text


def test_go_package_follows_the_managed_prefix(generated: Path) -> None:
    source = (generated / "go/pointillist/v1/jobs.pb.go").read_text()
    assert "package pointillistv1" in source
    assert '"google.golang.org/genproto/googleapis/rpc/status"' in source


def test_generated_python_calls_a_real_server(generated: Path, demo_server: ServerThread) -> None:
    """In a fresh interpreter that sees only the generated package (not clients/python)."""
    script = f"""
import sys
sys.path.insert(0, {str(generated / "python")!r})
import grpc
from pointillist.v1 import generation_pb2, generation_pb2_grpc
assert generation_pb2.__file__.startswith({str(generated)!r}), generation_pb2.__file__
with grpc.insecure_channel({demo_server.address!r}) as channel:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    print(stub.ListModels(generation_pb2.ListModelsRequest(), timeout=30).default_model)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "demo"


@pytest.mark.parametrize(
    ("flag", "expected", "needle"),
    [
        ("--go_out", "pointillist/v1/jobs.pb.go", "package pointillistv1"),
        ("--java_out", "dev/pointillist/v1/JobServiceGrpc.java", None),
        ("--java_out", "dev/pointillist/v1/WatchJobRequest.java", "package dev.pointillist.v1;"),
    ],
)
def test_plain_protoc_agrees_with_buf_managed_mode(
    tmp_path: Path, flag: str, expected: str, needle: str | None
) -> None:
    """The files' own go_package/java_package options give what buf's managed mode gives, so a
    team on plain protoc (no buf) gets the same packages, with no -M flags."""
    plugins = ["--plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin"] if "java" in flag else []
    grpc_out = [f"--grpc-java_out={tmp_path}"] if "java" in flag else []
    options = ["--go_opt=paths=source_relative"] if flag == "--go_out" else []
    done = subprocess.run(
        [
            "protoc",
            "-Iproto",
            "-Ithird_party/googleapis",
            f"{flag}={tmp_path}",
            *options,
            *plugins,
            *grpc_out,
            "proto/pointillist/v1/generation.proto",
            "proto/pointillist/v1/jobs.proto",
            "proto/pointillist/v1/status.proto",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / expected).read_text()
    assert needle is None or needle in text
