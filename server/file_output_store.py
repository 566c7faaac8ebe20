"""The output store in a local folder: one file per image, named by its content hash."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path


class FileOutputStore:
    """Writes images into ``folder`` (created if missing); URLs are ``file://`` URLs."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.writes = 0
        """Files written so far (an image already there is not written again)."""

    async def put(self, name: str, data: bytes, mime_type: str) -> str:
        return await asyncio.to_thread(self._write, name, data)

    def _write(self, name: str, data: bytes) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / name
        if not target.exists():
            # Written whole, then renamed: a reader never sees half a file.
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".partial-")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.replace(temporary, target)
                self.writes += 1
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return target.as_uri()
