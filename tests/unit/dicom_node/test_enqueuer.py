"""Publishing jobs after commit, off the association thread; failures keep the job."""

from __future__ import annotations

import logging
import threading

import pytest

from dicom_node.enqueuer import Enqueuer


def test_submitted_jobs_are_published_in_order() -> None:
    published: list[int] = []
    enqueuer = Enqueuer(published.append)
    for job_id in (3, 1, 2):
        enqueuer.submit(job_id)
    enqueuer.close()
    assert published == [3, 1, 2]
    assert enqueuer.failures == 0


def test_a_failing_broker_is_logged_and_the_thread_keeps_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published: list[int] = []

    def enqueue(job_id: int) -> None:
        if job_id == 1:
            raise ConnectionError("broker down")
        published.append(job_id)

    enqueuer = Enqueuer(enqueue)
    with caplog.at_level(logging.ERROR, logger="dicom_node.enqueuer"):
        enqueuer.submit(1)
        enqueuer.submit(2)
        enqueuer.close()
    assert published == [2]
    assert enqueuer.failures == 1
    assert "could not enqueue job 1" in caplog.text


def test_submit_does_not_wait_for_the_broker() -> None:
    release = threading.Event()
    done: list[int] = []

    def slow(job_id: int) -> None:
        release.wait(10)
        done.append(job_id)

    enqueuer = Enqueuer(slow)
    enqueuer.submit(7)  # returns while the broker call is blocked
    assert done == []
    release.set()
    enqueuer.close()
    assert done == [7]
