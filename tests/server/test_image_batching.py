"""Image-to-image and inpainting requests batched through a real server give each caller the
bytes it gets alone (issue 16).

The pair is forced into one batch by a held job (tests/holds.py): the demo server has one
replica, so while the held job runs both members are submitted (SubmitJob returns once a job is
queued); on release the replica takes the first member and the compatible second one together.
No outcome depends on timing. That they really shared a pipeline call is read from each
member's StartedEvent (``batch_size``), and the solo reruns say 1.
"""

from __future__ import annotations

import grpc
import pytest

from pointillist.v1 import generation_pb2 as pb
from pointillist.v1 import generation_pb2_grpc as pb_grpc
from pointillist.v1 import jobs_pb2 as jobs_pb
from pointillist.v1 import jobs_pb2_grpc as jobs_grpc
from server.background import ServerThread
from tests.holds import new_hold
from tests.server.test_image_inputs import encoded, noise_rgb, right_half_mask
from tests.server.test_jobs import held, params, started, submit, watch, watch_until

SIZE = 64


@pytest.fixture
def jobs(channel: grpc.Channel) -> jobs_grpc.JobServiceStub:
    return jobs_grpc.JobServiceStub(channel)


def image_fields(seed: int, inpaint: bool) -> dict[str, object]:
    """One member: its own init image (and mask) and seed; mode, size, steps and strength are
    what the batch key needs equal."""
    fields: dict[str, object] = {
        "prompt": f"a harbour, variation {seed}",
        "width": SIZE,
        "height": SIZE,
        "steps": 4,
        "strength": 0.5,
        "seed": 40 + seed,
        "init_image": pb.InputImage(data=encoded(noise_rgb(SIZE, SIZE, seed=seed))),
    }
    if inpaint:
        fields["mask"] = pb.InputImage(data=right_half_mask(SIZE, SIZE))
    return fields


def batch_size_and_images(events: list) -> tuple[int, list[bytes]]:
    (start,) = [event.started for event in events if event.HasField("started")]
    result = events[-1]
    assert result.HasField("result"), [event.WhichOneof("event") for event in events]
    return start.batch_size, [image.data for image in result.result.images]


@pytest.mark.parametrize("inpaint", [False, True], ids=["img2img", "inpainting"])
def test_batched_image_members_equal_their_solo_runs_byte_for_byte(
    jobs: jobs_grpc.JobServiceStub,
    stub: pb_grpc.GenerationServiceStub,
    demo_server: ServerThread,
    inpaint: bool,
) -> None:
    assert demo_server.settings.scheduler.max_batch_size >= 2
    members = [image_fields(seed, inpaint) for seed in (1, 2)]
    hold = new_hold("image-batch")
    blocker_id = submit(jobs, **held(hold))
    blocker_watch, _ = watch_until(jobs, blocker_id, started)  # the one replica is busy
    # Both queued behind it (SubmitJob returns once the job is queued).
    member_ids = [
        jobs.SubmitJob(jobs_pb.SubmitJobRequest(parameters=params(**fields)), timeout=10).job_id
        for fields in members
    ]
    hold.release()
    list(blocker_watch)

    batched = [batch_size_and_images(list(watch(jobs, job_id))) for job_id in member_ids]

    assert [size for size, _ in batched] == [2, 2]  # one pipeline call for both
    first, second = (images for _, images in batched)
    assert first != second  # different inputs and seeds: not one result shared
    for fields, (_, images) in zip(members, batched, strict=True):
        request = pb.StreamGenerateRequest(parameters=pb.GenerationParameters(**fields))  # type: ignore[arg-type]
        solo = list(stub.StreamGenerate(request, timeout=120))
        size, solo_images = batch_size_and_images(solo)
        assert size == 1
        assert solo_images == images
        mode = solo[-1].result.reproducibility.mode
        expected = pb.GENERATION_MODE_INPAINTING if inpaint else pb.GENERATION_MODE_IMAGE_TO_IMAGE
        assert mode == expected
