"""A real redis-server for tests and benchmarks: a free loopback port, no persistence, killed at
the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

READY_LINE = "Ready to accept connections"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisProcess:
    """``redis-server`` on 127.0.0.1:``port`` (a free one by default). ``start`` returns once
    the server logs that it accepts connections; ``kill`` ends it at once (SIGKILL)."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # scripts/system-packages.txt lists it; make test installs it
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._process = process
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:  # drains the pipe for the server's whole life
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if READY_LINE in line:
                    ready.set()

        threading.Thread(target=read, name=f"redis-{self.port}", daemon=True).start()
        if not ready.wait(START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"redis-server did not start: {''.join(lines)[-2000:]}")
        return self

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
        self._process = None
