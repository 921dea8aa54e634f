"""Answers relayed between the instances of a fleet (mcp_fast/transport/relay.py), in process.

Two `ServerRequests` with an `AnswerRelay` each over one directory stand for two instances; over
nginx and the official client: test_nginx.py::test_server_to_client_requests_find_the_instance_that_asked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from mcp_fast.fleet.relay import MAX_WAITING_ANSWERS, AnswerRelay, asking_instance
from mcp_fast.pipeline.server_requests import ServerRequests

POLL = 0.01
ANSWER = {"jsonrpc": "2.0", "id": "x", "result": {"action": "accept"}}


def instance(directory: Path) -> tuple[ServerRequests, AnswerRelay]:
    requests = ServerRequests()
    relay = AnswerRelay(directory, requests.instance, POLL)
    requests.relay = relay
    return requests, relay


def test_asking_instance_reads_only_our_ids() -> None:
    assert asking_instance("srv-0a1b2c3d-17") == "0a1b2c3d"
    for other in ("srv-0a1b2c3d", "srv-../../x-1", "srv-0A1B2C3D-1", "0a1b2c3d-1", 17, None, "srv-0a1b2c3d-1 "):
        assert asking_instance(other) is None, other


def test_an_answer_received_elsewhere_reaches_the_waiter(tmp_path: Path) -> None:
    async def main() -> None:
        asker, _ = instance(tmp_path)
        _, receiver = instance(tmp_path)
        request_id, answer = asker.open("session-1")
        assert receiver.forward(asker.instance, request_id, "session-1", {**ANSWER, "id": request_id})
        assert await asyncio.wait_for(answer, 5) == {"action": "accept"}
        asker.close(request_id)
        await asyncio.sleep(POLL * 5)
        assert asker._watching is None  # nothing waits: no more looking at the directory
        assert os.listdir(tmp_path / asker.instance) == []  # taken

    asyncio.run(main())


def test_another_sessions_answer_is_relayed_but_answers_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        asker, _ = instance(tmp_path)
        _, receiver = instance(tmp_path)
        request_id, answer = asker.open("session-1")
        receiver.forward(asker.instance, request_id, "intruder", {**ANSWER, "id": request_id})
        await asyncio.sleep(POLL * 10)
        assert not answer.done()
        receiver.forward(asker.instance, request_id, "session-1", {**ANSWER, "id": request_id})
        assert await asyncio.wait_for(answer, 5) == {"action": "accept"}

    asyncio.run(main())


def test_error_answers_arrive_as_errors(tmp_path: Path) -> None:
    async def main() -> None:
        asker, _ = instance(tmp_path)
        _, receiver = instance(tmp_path)
        request_id, answer = asker.open("s")
        error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -1, "message": "declined"}}
        receiver.forward(asker.instance, request_id, "s", error)
        with pytest.raises(Exception, match="declined"):
            await asyncio.wait_for(answer, 5)

    asyncio.run(main())


def test_forward_refuses_itself_and_names_that_are_not_instances(tmp_path: Path) -> None:
    relay = AnswerRelay(tmp_path, "0a1b2c3d", POLL)
    assert not relay.forward("0a1b2c3d", "srv-0a1b2c3d-1", "s", ANSWER)
    for name in ("..", "../x", "", "0a1b2c3", "zzzzzzzz", "0a1b2c3d/../.."):
        assert not relay.forward(name, "srv-x-1", "s", ANSWER), name
    # A well-formed id of an instance that does not run (no mailbox): dropped, nothing created.
    assert not relay.forward("12345678", "srv-12345678-1", "s", ANSWER)
    assert os.listdir(tmp_path) == ["0a1b2c3d"]
    assert os.listdir(tmp_path / "0a1b2c3d") == []
    with pytest.raises(ValueError):
        AnswerRelay(tmp_path, "../..", POLL)


def test_take_skips_unfinished_files_and_drops_malformed_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    relay = AnswerRelay(tmp_path, "0a1b2c3d", POLL)
    mailbox = tmp_path / "0a1b2c3d"
    (mailbox / ".half.tmp").write_bytes(b'{"id": "srv-0a1b2c3d-1"')  # still being written
    for name, data in {
        "a.json": b"not json",
        "b.json": b"[1, 2]",
        "c.json": b'{"id": 1, "owner": "s", "message": {}}',
        "d.json": b'{"id": "srv-0a1b2c3d-1", "owner": "s", "message": []}',
    }.items():
        (mailbox / name).write_bytes(data)
    other = AnswerRelay(tmp_path, "99999999", POLL)
    other.forward("0a1b2c3d", "srv-0a1b2c3d-2", "s", ANSWER)
    with caplog.at_level(logging.WARNING, logger="mcp_fast.transport"):
        assert relay.take(time.time()) == [("srv-0a1b2c3d-2", "s", ANSWER)]
    assert sum("malformed relayed answer" in r.getMessage() for r in caplog.records) == 4
    assert os.listdir(mailbox) == [".half.tmp"]
    assert relay.take(time.time()) == []


def test_abandoned_mailboxes_are_swept_and_close_removes_its_own(tmp_path: Path) -> None:
    relay = AnswerRelay(tmp_path, "0a1b2c3d", POLL)
    abandoned, fresh = tmp_path / "11111111", tmp_path / "22222222"
    for mailbox in (abandoned, fresh):
        mailbox.mkdir()
        (mailbox / "x.json").write_bytes(b"{}")
    long_ago = time.time() - 7200
    os.utime(abandoned, (long_ago, long_ago))
    relay.take(time.time())
    assert not abandoned.exists() and fresh.exists()
    relay.close()
    assert not (tmp_path / "0a1b2c3d").exists() and fresh.exists()


def test_a_broken_directory_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    relay = AnswerRelay(tmp_path / "answers", "0a1b2c3d", POLL)
    shutil.rmtree(tmp_path / "answers")
    (tmp_path / "answers").write_bytes(b"")  # a file where the directory was
    with caplog.at_level(logging.ERROR, logger="mcp_fast.transport"):
        assert relay.take(time.time()) == []
        assert not relay.forward("11111111", "srv-11111111-1", "s", ANSWER)
    assert any("cannot pass an answer on" in r.getMessage() for r in caplog.records)


def test_a_mailbox_holds_a_bounded_number_of_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only a waiting instance empties its mailbox: answers nobody waits for must not pile up."""
    AnswerRelay(tmp_path, "0a1b2c3d", POLL)
    sender = AnswerRelay(tmp_path, "11111111", POLL)
    for n in range(MAX_WAITING_ANSWERS):
        assert sender.forward("0a1b2c3d", f"srv-0a1b2c3d-{n}", "s", ANSWER)
    with caplog.at_level(logging.WARNING, logger="mcp_fast.transport"):
        assert not sender.forward("0a1b2c3d", "srv-0a1b2c3d-999", "s", ANSWER)
    assert any("was dropped" in r.getMessage() for r in caplog.records)
    assert len(os.listdir(tmp_path / "0a1b2c3d")) == MAX_WAITING_ANSWERS


def test_a_swept_mailbox_is_back_before_the_next_request_goes_out(tmp_path: Path) -> None:
    async def main() -> None:
        asker, _ = instance(tmp_path)
        _, receiver = instance(tmp_path)
        shutil.rmtree(tmp_path / asker.instance)  # swept by another instance while this one idled
        request_id, answer = asker.open("s")
        assert receiver.forward(asker.instance, request_id, "s", {**ANSWER, "id": request_id})
        assert await asyncio.wait_for(answer, 5) == {"action": "accept"}

    asyncio.run(main())


def test_a_waiting_instance_keeps_its_mailbox_from_the_sweep(tmp_path: Path) -> None:
    relay = AnswerRelay(tmp_path, "0a1b2c3d", POLL)
    long_ago = time.time() - 7200
    os.utime(tmp_path / "0a1b2c3d", (long_ago, long_ago))
    relay.take(time.time())  # what the waiting instance does every poll
    sweeper = AnswerRelay(tmp_path, "11111111", POLL)
    sweeper.take(time.time())
    assert (tmp_path / "0a1b2c3d").is_dir()
