"""The agent's metric endpoint: a strict HTTP parser, per-task rates, and the whole path over
loopback with a fake address book (the real engine is in tests/e2e/test_custom_metrics.py)."""

from __future__ import annotations

import asyncio

import pytest

from agent.metric_endpoint import (
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    MetricEndpoint,
    TaskAddresses,
    TaskRates,
    parse_head,
    parse_listen,
    parse_metric,
)
from agent.session import METRIC_OUTBOX, Outbox
from berth.errors import InvalidArgument
from berth.v1 import agent_pb2 as agent_pb

TASK = "a" * 32
GOOD = b"POST /v1/metrics/queue_depth HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"


def test_a_good_head_parses() -> None:
    head = parse_head(GOOD)
    assert (head.method, head.path, head.content_length) == ("POST", "/v1/metrics/queue_depth", 2)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /v1/metrics/x HTTP/1.1\r\nContent-Length: 1\r\n\r\n", 405),
        (b"POST /v1/metrics/x HTTP/2\r\nContent-Length: 1\r\n\r\n", 505),
        (b"POST /v1/metrics/x\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST  /v1/metrics/x HTTP/1.1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\n\r\n", 411),
        (b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 413),
        (b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: 1\r\n folded\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\nNo colon\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\nX: a\x00b\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST /v1/metrics/\xff HTTP/1.1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\nContent-Length: 1\n\n", 400),
        (b"POST /v1/metrics/x HTTP/1.1\r\n" + b"X: y\r\n" * 40 + b"Content-Length: 1\r\n\r\n", 431),
        (b"POST /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n", 431),
    ],
)
def test_bad_heads_are_refused_with_their_status(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as refused:
        parse_head(head)
    assert refused.value.status == status
    assert "\n" not in str(refused.value)


def test_a_good_metric_parses() -> None:
    assert parse_metric("/v1/metrics/rps", b"12.5\n") == ("rps", 12.5)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/other/rps", b"1", 404),
        ("/", b"1", 404),
        ("/v1/metrics/", b"1", 400),
        ("/v1/metrics/Rps", b"1", 400),
        ("/v1/metrics/rps?task=" + TASK, b"1", 400),
        ("/v1/metrics/../rps", b"1", 400),
        ("/v1/metrics/rps", b"nan", 400),
        ("/v1/metrics/rps", b"inf", 400),
        ("/v1/metrics/rps", b"1e13", 400),
        ("/v1/metrics/rps", b"", 400),
        ("/v1/metrics/rps", b"\xff", 400),
        ("/v1/metrics/rps", b"twelve", 400),
    ],
)
def test_bad_metrics_are_refused(path: str, body: bytes, status: int) -> None:
    with pytest.raises(HttpError) as refused:
        parse_metric(path, body)
    assert refused.value.status == status


def test_each_task_has_its_own_rate() -> None:
    rates = TaskRates(rate=10.0, burst=2.0)
    assert [rates.allow(TASK, 0.0) for _ in range(3)] == [True, True, False]
    assert rates.allow("b" * 32, 0.0)
    assert not rates.allow(TASK, 0.05)
    assert rates.allow(TASK, 0.2)


@pytest.mark.parametrize("text", ["bridge:8125", "172.17.0.1:8125", "[::1]:9"])
def test_listen_addresses_parse(text: str) -> None:
    parse_listen(text)


@pytest.mark.parametrize("text", ["8125", "bridge", "localhost:8125", "1.2.3.4:0", "1.2.3.4:70000", ":80"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_listen(text)


async def test_addresses_are_cached_and_looked_up_again_for_an_unknown_one() -> None:
    lookups = 0
    now = [0.0]

    async def lookup() -> dict[str, str]:
        nonlocal lookups
        lookups += 1
        return {"172.17.0.5": TASK}

    addresses = TaskAddresses(lookup, clock=lambda: now[0], max_age=5.0, min_refresh=1.0)
    assert await addresses.task_at("172.17.0.5") == TASK
    assert await addresses.task_at("172.17.0.5") == TASK
    assert await addresses.task_at("172.17.0.9") is None
    assert lookups == 1  # an unknown address does not look again within min_refresh
    now[0] = 1.5
    assert await addresses.task_at("172.17.0.9") is None
    assert lookups == 2
    now[0] = 7.0
    await addresses.task_at("172.17.0.5")
    assert lookups == 3


def test_the_outbox_refuses_metrics_when_full() -> None:
    outbox = Outbox()
    put = agent_pb.MetricPut(task_id=TASK, name="rps", value=1.0)
    assert all(outbox.metric(put) for _ in range(METRIC_OUTBOX))
    assert not outbox.metric(put)


async def _post(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    writer.write_eof()  # the caller has said all it will
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_requests_over_loopback() -> None:
    sent: list[agent_pb.MetricPut] = []
    known = {"127.0.0.1": TASK}

    async def task_at(address: str) -> str | None:
        return known.get(address)

    def forward(put: agent_pb.MetricPut) -> bool:
        sent.append(put)
        return True

    endpoint = MetricEndpoint(task_at, forward, rates=TaskRates(10.0, 3.0))
    _, port = await endpoint.start("127.0.0.1", 0)
    try:
        body = b"42"
        request = GOOD.replace(b"Content-Length: 2", f"Content-Length: {len(body)}".encode()) + body
        assert (await _post(port, request)).startswith(b"HTTP/1.1 204 ")
        assert sent == [agent_pb.MetricPut(task_id=TASK, name="queue_depth", value=42.0)]

        bad = await _post(port, b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nnan")
        assert bad.startswith(b"HTTP/1.1 400 ")
        huge = await _post(port, b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: 999\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 413 ")
        early = await _post(port, b"POST /v1/metrics/x HTTP/1.1\r\nContent-Length: 9\r\n\r\n1")
        assert early.startswith(b"HTTP/1.1 400 ")
        long_head = await _post(port, b"POST /" + b"a" * (MAX_HEAD + 10))
        assert long_head.startswith(b"HTTP/1.1 431 ")
        assert len(sent) == 1

        # The burst of 3 is used by the first request and two more; the next is refused.
        results = [await _post(port, request) for _ in range(3)]
        assert [r.split(b" ")[1] for r in results] == [b"204", b"204", b"429"]

        known.clear()
        stranger = await _post(port, request)
        assert stranger.startswith(b"HTTP/1.1 403 ")
        assert len(sent) == 3
    finally:
        await endpoint.close()


async def test_no_room_upstream_is_503() -> None:
    async def task_at(address: str) -> str | None:
        return TASK

    endpoint = MetricEndpoint(task_at, lambda put: False)
    _, port = await endpoint.start("127.0.0.1", 0)
    try:
        reply = await _post(port, b"POST /v1/metrics/rps HTTP/1.0\r\ncontent-length: 1\r\n\r\n7")
        assert reply.startswith(b"HTTP/1.1 503 ")
    finally:
        await endpoint.close()


def test_body_limit_is_small() -> None:
    assert MAX_BODY <= 64
