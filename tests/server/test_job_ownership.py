"""With API keys on, a job belongs to the key that submitted it (issue 14, isolation).

Another user key gets NOT_FOUND from WatchJob, GetJob and CancelJob, the same answer as for an id
that never existed (PERMISSION_DENIED would confirm the id); an admin key sees every job. A real
server with keys and a real channel; the job is held (tests.holds) so it is still running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pointillist import Client
from pointillist.errors import NotFoundError
from scheduler.job import JobState as ServerJobState
from server.auth import ApiKey, Role, hash_key
from server.background import ServerThread
from tests.conftest import demo_settings
from tests.holds import new_hold

ALICE, BOB, OPS = "pk_alice-owns-0123456789", "pk_bob-does-not-9876543210", "pk_ops-admin-key"
KEYS = (
    ApiKey("alice", Role.USER, hash_key(ALICE)),
    ApiKey("bob", Role.USER, hash_key(BOB)),
    ApiKey("ops", Role.ADMIN, hash_key(OPS)),
)


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerThread]:
    server = ServerThread(demo_settings(api_keys=KEYS)).start()
    yield server
    server.stop()


def not_found_text(call: Callable[[str], object], job_id: str) -> str:
    with pytest.raises(NotFoundError) as caught:
        call(job_id)
    return str(caught.value)


def test_another_users_key_gets_not_found_and_an_admin_sees_the_job(keyed_server):
    hold = new_hold("owned")
    with (
        Client(keyed_server.address, api_key=ALICE, timeout=60) as alice,
        Client(keyed_server.address, api_key=BOB, timeout=60) as bob,
        Client(keyed_server.address, api_key=OPS, timeout=60) as ops,
    ):
        job_id = alice.submit(hold.prompt, width=64, height=64, steps=4)
        never = "0" * len(job_id)

        calls: dict[str, Callable[[str], object]] = {
            "get": bob.get_job,
            "cancel": bob.cancel_job,
            "watch": lambda job: bob.watch(job).result(),
        }
        for name, call in calls.items():
            real, unknown = not_found_text(call, job_id), not_found_text(call, never)
            assert real.replace(job_id, "<id>") == unknown.replace(never, "<id>"), name

        assert ops.get_job(job_id).id == job_id  # an admin sees every job
        assert alice.get_job(job_id).id == job_id
        # Bob's cancel did nothing.
        assert keyed_server.scheduler.get_job(job_id).state is ServerJobState.RUNNING
        alice.cancel_job(job_id)
    assert keyed_server.wait_job_finished(job_id).state is ServerJobState.CANCELLED
