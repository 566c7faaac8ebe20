"""The output store: images written to a folder (or S3), the reply carrying their URLs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import grpc
import pytest

from engine.job import EncodedImage, GenerationOutput
from pointillist import Client
from server.background import ServerThread
from server.file_output_store import FileOutputStore
from server.output_store import OutputPublisher, OutputStoreError, open_output_store
from server.s3_output_store import S3OutputStore
from tests.conftest import demo_settings
from tests.scheduler.test_result_cache_parts import output
from tests.server.test_result_cache import QUICK


def file_of(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file", url
    return Path(url2pathname(parts.path))


@pytest.fixture(scope="module")
def out_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs") / "images"


@pytest.fixture(scope="module")
def url_only_server(out_folder: Path) -> Iterator[ServerThread]:
    settings = demo_settings(output_store=out_folder.as_uri(), output_inline=False)
    server = ServerThread(settings).start()
    yield server
    server.stop()


def test_urls_only_the_files_hold_the_very_bytes_an_inline_reply_has(
    url_only_server: ServerThread, demo_server: ServerThread, out_folder: Path
) -> None:
    with Client(url_only_server.address) as client:
        stored = client.generate("a lighthouse at dusk", seed=77, num_images=2, **QUICK)
    with Client(demo_server.address) as client:  # no output store: images inline
        inline = client.generate("a lighthouse at dusk", seed=77, num_images=2, **QUICK)

    assert [image.data for image in stored.images] == [b"", b""]
    assert [image.url for image in inline.images] == ["", ""]
    for image, reference in zip(stored.images, inline.images, strict=True):
        path = file_of(image.url)
        assert path.parent == out_folder.resolve()
        assert path.read_bytes() == reference.data
        assert path.name == hashlib.sha256(reference.data).hexdigest() + ".png"
    assert not list(out_folder.glob(".partial-*"))


def test_streams_watches_and_job_records_carry_the_same_urls(
    url_only_server: ServerThread,
) -> None:
    with Client(url_only_server.address) as client:
        streamed = client.stream("a fox", seed=5, output_format="webp", **QUICK).result()
        job_id = client.submit("a fox", seed=5, output_format="webp", **QUICK)
        watched = client.watch(job_id).result()
        record = client.get_job(job_id)

    assert record.result is not None
    urls = {streamed.images[0].url, watched.images[0].url, record.result.images[0].url}
    assert len(urls) == 1  # the same bytes, so the same content-named file
    (url,) = urls
    assert url.endswith(".webp") and file_of(url).read_bytes()[8:12] == b"WEBP"


async def test_inline_on_keeps_the_bytes_beside_the_url(tmp_path: Path) -> None:
    publisher = OutputPublisher(FileOutputStore(tmp_path), inline=True)
    original = output((EncodedImage(b"png bytes", "image/png", 1, 1, seed=3),))
    published = await publisher.publish(original)
    again = await publisher.publish(original)

    (image,) = published.images
    assert image.data == b"png bytes" and file_of(image.url).read_bytes() == b"png bytes"
    assert again == published
    assert len(list(tmp_path.iterdir())) == 1


class BrokenStore:
    async def put(self, name: str, data: bytes, mime_type: str) -> str:
        raise OSError("disk full")


async def test_a_failing_store_falls_back_to_inline_bytes_or_fails_clearly() -> None:
    original: GenerationOutput = output((EncodedImage(b"png", "image/png", 1, 1),))
    assert await OutputPublisher(BrokenStore(), inline=True).publish(original) == original
    with pytest.raises(OutputStoreError, match="disk full"):
        await OutputPublisher(BrokenStore(), inline=False).publish(original)


def test_a_failing_store_with_urls_only_ends_the_call_unavailable() -> None:
    from server.errors import status_for

    status = status_for(OutputStoreError("the output store failed: disk full"))
    assert status.code == grpc.StatusCode.UNAVAILABLE


def test_store_locations(tmp_path: Path) -> None:
    assert isinstance(open_output_store(tmp_path.as_uri()), FileOutputStore)
    assert isinstance(open_output_store(str(tmp_path)), FileOutputStore)
    s3 = open_output_store("s3://bucket/some/prefix/", "http://127.0.0.1:9000")
    assert isinstance(s3, S3OutputStore)
    assert (s3.bucket, s3.key("a.png")) == ("bucket", "some/prefix/a.png")
    for bad in ("s3://", "ftp://host/x", "file://elsewhere/x", ""):
        with pytest.raises(ValueError):
            open_output_store(bad)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3-compatible HTTP server on loopback (moto's), with one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="pointillist-out")
    yield endpoint
    server.stop()


async def test_the_s3_store_uploads_objects_that_match_the_urls(s3_endpoint: str) -> None:
    import boto3

    store = open_output_store("s3://pointillist-out/results/", s3_endpoint)
    publisher = OutputPublisher(store, inline=False)
    images = (
        EncodedImage(b"\x89PNG one", "image/png", 1, 1, seed=1),
        EncodedImage(b"RIFF....WEBP two", "image/webp", 1, 1, seed=2),
    )
    published = await publisher.publish(output(images))

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for image, original in zip(published.images, images, strict=True):
        assert image.data == b""
        parts = urlsplit(image.url)
        assert (parts.scheme, parts.netloc) == ("s3", "pointillist-out")
        assert parts.path.startswith("/results/")
        stored = s3.get_object(Bucket="pointillist-out", Key=parts.path.lstrip("/"))
        assert stored["Body"].read() == original.data
        assert stored["ContentType"] == original.mime_type
