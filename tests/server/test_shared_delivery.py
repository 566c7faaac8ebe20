"""One job, many watchers (issue 14): each event's envelope is built once and shared, and the
result's images are hashed and uploaded once, not once per watcher. A real server with a real
file output store, real channels; the job is held (tests.holds) until every watcher is in."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from engine.job import EncodedImage
from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import jobs_pb2, jobs_pb2_grpc
from server.background import ServerThread
from server.file_output_store import FileOutputStore
from server.output_store import OutputPublisher
from tests.conftest import demo_settings
from tests.holds import new_hold
from tests.scheduler.test_result_cache_parts import output

WATCHERS = 6
IMAGES = 2


def test_concurrent_watchers_share_one_conversion_per_event_and_one_upload(
    tmp_path: Path,
) -> None:
    server = ServerThread(demo_settings(output_store=tmp_path.as_uri())).start()
    hold = new_hold("shared")
    try:
        assert server.running is not None and server.running.jobs is not None
        jobs_servicer = server.running.jobs
        assert jobs_servicer.envelopes.outputs is not None
        store = jobs_servicer.envelopes.outputs.store
        assert isinstance(store, FileOutputStore)
        with server.channel() as channel:
            jobs = jobs_pb2_grpc.JobServiceStub(channel)
            parameters = pb.GenerationParameters(
                prompt=hold.prompt,
                width=64,
                height=64,
                steps=3,
                num_images=IMAGES,
                preview=pb.PreviewOptions(every_n_steps=1),
            )
            job_id = jobs.SubmitJob(jobs_pb2.SubmitJobRequest(parameters=parameters)).job_id
            request = jobs_pb2.WatchJobRequest(job_id=job_id)
            calls = [jobs.WatchJob(request, timeout=60) for _ in range(WATCHERS)]
            firsts = [next(call) for call in calls]  # every watcher is in before the job goes on
            hold.release()
            streams = [[first, *call] for first, call in zip(firsts, calls, strict=True)]

            reference = [message.SerializeToString() for message in streams[0]]
            for stream in streams[1:]:
                assert [message.SerializeToString() for message in stream] == reference
            result = streams[0][-1].result
            assert len(result.images) == IMAGES
            assert all(image.url and image.data for image in result.images)
            assert store.writes == IMAGES  # uploaded once, not once per watcher
            # Once per event; only the preview sent before the hold may be rebuilt, at most once
            # per watcher that joined after the others had passed it (previews are dropped then).
            kinds = Counter(message.WhichOneof("event") for message in streams[0])
            built = jobs_servicer.envelopes.built
            assert built["GenerationOutput"] == kinds["result"] == 1
            assert built["StepProgress"] == kinds["progress"]
            assert built["Queued"] + built["Started"] == kinds["queued"] + kinds["started"]
            previews = kinds["preview"]
            assert previews <= built["StepPreview"] <= previews + WATCHERS - 1

            # A later GetJob serves the same URLs without uploading again.
            record = jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=30)
            assert [i.url for i in record.job.result.images] == [i.url for i in result.images]
            assert store.writes == IMAGES
    finally:
        server.stop()


async def test_concurrent_first_publishes_of_one_result_upload_once(tmp_path: Path) -> None:
    store = FileOutputStore(tmp_path)
    publisher = OutputPublisher(store)
    result = output(
        (
            EncodedImage(b"first image", "image/png", 1, 1, seed=1),
            EncodedImage(b"second image", "image/png", 1, 1, seed=2),
        )
    )
    published = await asyncio.gather(*(publisher.publish(result) for _ in range(10)))
    assert store.writes == 2
    assert all(item == published[0] for item in published)
    assert all(image.url for image in published[0].images)
