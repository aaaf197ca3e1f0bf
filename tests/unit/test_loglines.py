"""Container output as bounded lines (berth.loglines), and the control plane's check of it
(controlplane.validation.agent_reports: kept output on STOPPED reports, live log chunks)."""

from __future__ import annotations

import pytest

from berth import loglines
from berth.errors import InvalidArgument
from berth.v1 import agent_pb2 as agent_pb
from berth.v1 import resources_pb2 as pb
from controlplane.validation import agent_reports as v

TASK_ID = "0123456789abcdef0123456789abcdef"
REQUEST_ID = "fedcba9876543210fedcba9876543210"


def split(*pieces: bytes, limit: int = loglines.MAX_LINE_CHARS) -> list[str]:
    splitter = loglines.LineSplitter(limit)
    lines = []
    for piece in pieces:
        lines += splitter.feed(piece)
    return lines + splitter.flush()


@pytest.mark.parametrize(
    ("pieces", "lines"),
    [
        ((b"",), []),
        ((b"one\ntwo\n",), ["one", "two"]),
        ((b"no newline at the end",), ["no newline at the end"]),
        ((b"crlf\r\n",), ["crlf"]),
        ((b"sp", b"lit\nacross ", b"reads\n"), ["split", "across reads"]),
        # A multi-byte character split between two reads is decoded whole.
        (("é\n".encode()[:1], "é\n".encode()[1:]), ["é"]),
        ((b"bad \xff byte\n",), ["bad \ufffd byte"]),
        ((b"\n\n",), ["", ""]),
        # Control characters are kept: escaping them is the printer's job.
        ((b"\x1b]0;owned\x07\n",), ["\x1b]0;owned\x07"]),
    ],
)
def test_splitter_makes_whole_lines(pieces: tuple[bytes, ...], lines: list[str]) -> None:
    assert split(*pieces) == lines


def test_splitter_cuts_a_long_line_and_skips_its_rest() -> None:
    lines = split(b"x" * 50, b"y" * 50 + b"\nnext\n", limit=40)
    assert lines == ["x" * (40 - len(loglines.CUT_MARK)) + loglines.CUT_MARK, "next"]
    assert all(len(line) <= 40 for line in lines)


def test_chunked_respects_both_limits() -> None:
    lines = [f"line {i}" for i in range(10)]
    assert list(loglines.chunked(lines, max_lines=4)) == [lines[:4], lines[4:8], lines[8:]]
    groups = list(loglines.chunked(["a" * 6] * 5, max_chars=13))
    assert groups == [["a" * 6] * 2] * 2 + [["a" * 6]]
    assert list(loglines.chunked([])) == []


@pytest.mark.parametrize(
    ("lines", "max_lines", "max_bytes", "kept", "truncated"),
    [
        ([], 20, 4096, [], False),
        (["a", "b"], 20, 4096, ["a", "b"], False),
        ([str(i) for i in range(30)], 20, 4096, [str(i) for i in range(10, 30)], True),
        # The byte bound counts UTF-8: "é" is 2 bytes.
        (["ééé", "é", "x"], 20, 3, ["é", "x"], True),
        (["aaaa", "bb"], 20, 5, ["bb"], True),
    ],
)
def test_keep_last(
    lines: list[str], max_lines: int, max_bytes: int, kept: list[str], truncated: bool
) -> None:
    assert loglines.keep_last(lines, max_lines, max_bytes) == (kept, truncated)


def test_keep_last_cuts_one_huge_last_line_to_fit() -> None:
    kept, truncated = loglines.keep_last(["before", "é" * 5000])
    assert truncated and len(kept) == 1
    assert kept[0].endswith(loglines.CUT_MARK)
    assert loglines.utf8_size(kept) <= loglines.KEPT_BYTES


def test_kept_output_within_bounds_is_accepted_on_a_stopped_report() -> None:
    lines, _ = loglines.keep_last([f"line {i} " + "é" * 300 for i in range(40)])
    report = agent_pb.TaskStatusReport(
        task_id=TASK_ID,
        last_status=pb.STOPPED,
        kept_output=pb.KeptOutput(container="web", lines=lines, truncated=True),
    )
    v.check_status_report(report)


@pytest.mark.parametrize(
    ("kept", "complaint"),
    [
        (pb.KeptOutput(container="web", lines=["x"] * 21), "at most 20"),
        (pb.KeptOutput(container="web", lines=["é" * 1500, "é" * 1500]), "bytes: at most 4096"),
        (pb.KeptOutput(container="web", lines=["x" * 5000]), "at most 4096"),
        (pb.KeptOutput(container="web", lines=["two\nlines"]), "line break"),
        (pb.KeptOutput(container="we b", lines=["x"]), "kept_output.container"),
    ],
)
def test_kept_output_out_of_bounds_is_refused(kept: pb.KeptOutput, complaint: str) -> None:
    report = agent_pb.TaskStatusReport(task_id=TASK_ID, last_status=pb.STOPPED, kept_output=kept)
    with pytest.raises(InvalidArgument, match=complaint):
        v.check_status_report(report)


def test_a_log_chunk_within_bounds_is_accepted() -> None:
    lines = ["\x1b[31mhostile but bounded\x07"] * loglines.MAX_CHUNK_LINES
    v.check_log_chunk(pb.LogChunk(request_id=REQUEST_ID, task_id=TASK_ID, container="web", lines=lines))
    v.check_log_chunk(pb.LogChunk(request_id=REQUEST_ID, end=True, error="no such container"))


@pytest.mark.parametrize(
    ("chunk", "complaint"),
    [
        (pb.LogChunk(request_id="nope"), "request id"),
        (pb.LogChunk(request_id=REQUEST_ID, task_id="../../etc"), "task id"),
        (pb.LogChunk(request_id=REQUEST_ID, container="a;b"), "container"),
        (pb.LogChunk(request_id=REQUEST_ID, lines=["x"] * (loglines.MAX_CHUNK_LINES + 1)), "lines"),
        (pb.LogChunk(request_id=REQUEST_ID, lines=["x" * (loglines.MAX_LINE_CHARS + 1)]), "characters long"),
        (
            pb.LogChunk(request_id=REQUEST_ID, lines=["x" * loglines.MAX_LINE_CHARS] * 17),
            "characters: at most",
        ),
        (pb.LogChunk(request_id=REQUEST_ID, lines=["forged\nline"]), "line break"),
        (pb.LogChunk(request_id=REQUEST_ID, error="e" * 5000), "error"),
    ],
)
def test_a_log_chunk_out_of_bounds_is_refused(chunk: pb.LogChunk, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        v.check_log_chunk(chunk)
