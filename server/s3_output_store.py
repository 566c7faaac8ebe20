"""The output store in an S3-compatible bucket (AWS S3, MinIO, Ceph...) through boto3.

boto3 is an optional dependency (``pip install 'pointillist[s3]'``); it is imported only when an
``s3://`` output store is configured. Credentials and region come the usual boto3 way
(environment, ``~/.aws``, instance roles); ``endpoint_url`` points it at a non-AWS store.
"""

from __future__ import annotations

import asyncio
from typing import Any


class S3OutputStore:
    """Uploads images to ``bucket`` under ``prefix``; URLs are ``s3://bucket/prefix/name``."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        try:
            import boto3
        except ImportError as exc:
            raise ValueError(
                "an s3:// output store needs boto3: pip install 'pointillist[s3]'"
            ) from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # A boto3 client is safe to share between threads (a session is not).
        self._client: Any = boto3.session.Session().client("s3", endpoint_url=endpoint_url)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    async def put(self, name: str, data: bytes, mime_type: str) -> str:
        key = self.key(name)
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=mime_type
        )
        return f"s3://{self.bucket}/{key}"
