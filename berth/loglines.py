"""Container output as bounded lines: cut, decoded and counted the same on both ends.

The agent turns an engine's byte stream into whole lines with `LineSplitter`
(UTF-8, undecodable bytes replaced, over-long lines cut), groups them into
chunks with `chunked`, and keeps a stopped task's last lines with
`keep_last`. The control plane checks what arrives against the same limits
(`controlplane.validation.agent_reports`), so an agent that sends more is
refused, never stored or relayed. Lines are the container's own text: the
CLI escapes their control characters before printing (`berth.safetext`).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

# One line of live output; longer lines are cut, with CUT_MARK appended.
MAX_LINE_CHARS = 16 * 1024
CUT_MARK = " [line cut]"
# One LogChunk: at most this many lines and characters (the gRPC message stays far below 4 MiB).
MAX_CHUNK_LINES = 256
MAX_CHUNK_CHARS = 256 * 1024
# A stopped task's kept output: its last KEPT_LINES lines, at most KEPT_BYTES of UTF-8 in all.
KEPT_LINES = 20
KEPT_BYTES = 4096


def cut_line(line: str, limit: int = MAX_LINE_CHARS) -> str:
    """The line, or its start and CUT_MARK when it is longer than `limit` characters."""
    if len(line) <= limit:
        return line
    return line[: limit - len(CUT_MARK)] + CUT_MARK


class LineSplitter:
    """Bytes in (as the engine hands them, split anywhere), whole lines out.

    Multi-byte characters split across reads are decoded whole; invalid bytes
    become U+FFFD; a line's ending (\\n, or \\r\\n) is dropped; a line still
    growing past MAX_LINE_CHARS is cut and the rest of it skipped.
    """

    def __init__(self, limit: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._limit = limit
        self._partial = ""
        self._skipping = False  # inside the rest of a line that was cut

    def feed(self, data: bytes) -> list[str]:
        return self._split(self._decoder.decode(data))

    def flush(self) -> list[str]:
        """Whatever is left when the output ends: the last line, if it had no newline."""
        lines = self._split(self._decoder.decode(b"", final=True))
        if self._partial and not self._skipping:
            lines.append(self._partial.removesuffix("\r"))
        self._partial, self._skipping = "", False
        return lines

    def _split(self, text: str) -> list[str]:
        lines = []
        pieces = text.split("\n")
        for piece in pieces[:-1]:
            if not self._skipping:
                lines.append(cut_line((self._partial + piece).removesuffix("\r"), self._limit))
            self._partial, self._skipping = "", False
        rest = pieces[-1]
        if not self._skipping:
            self._partial += rest
            if len(self._partial) > self._limit:
                lines.append(cut_line(self._partial, self._limit))
                self._partial, self._skipping = "", True
        return lines


def chunked(
    lines: Iterable[str], max_lines: int = MAX_CHUNK_LINES, max_chars: int = MAX_CHUNK_CHARS
) -> Iterator[list[str]]:
    """Consecutive groups of the lines, each within both limits (lines are already cut)."""
    group: list[str] = []
    size = 0
    for line in lines:
        if group and (len(group) >= max_lines or size + len(line) > max_chars):
            yield group
            group, size = [], 0
        group.append(line)
        size += len(line)
    if group:
        yield group


def utf8_size(lines: Iterable[str]) -> int:
    return sum(len(line.encode("utf-8", "surrogatepass")) for line in lines)


def keep_last(
    lines: Iterable[str], max_lines: int = KEPT_LINES, max_bytes: int = KEPT_BYTES
) -> tuple[list[str], bool]:
    """The last lines that fit in both limits, and whether anything older was left out.

    A last line longer than max_bytes on its own is kept cut to fit, so a
    crash that printed one huge line still leaves its start.
    """
    every = list(lines)
    kept: list[str] = []
    size = 0
    cut = False
    for line in reversed(every):
        if len(kept) >= max_lines:
            break
        length = len(line.encode("utf-8", "surrogatepass"))
        if size + length > max_bytes:
            if not kept:
                kept.append(_cut_bytes(line, max_bytes))
                cut = True
            break
        kept.append(line)
        size += length
    kept.reverse()
    return kept, cut or len(kept) < len(every)


def _cut_bytes(line: str, max_bytes: int) -> str:
    budget = max_bytes - len(CUT_MARK)
    data = line.encode("utf-8", "surrogatepass")[:budget]
    return data.decode("utf-8", "ignore") + CUT_MARK
