"""Reading a job's log for `sched logs` in bounded memory, whatever its size or shape.

A days-long job can write gigabytes, and a progress bar or a binary dump can make one line of
all of it: reading the whole file (or all of one line) took 23 s and 5.9 GB for a 2 GB log
without newlines. So the tail is found by reading backwards in blocks, the log is streamed in
blocks, and a line is shown up to `max_chars` characters, the rest counted and left out with a
marker. Standard library only.
"""

from __future__ import annotations

import codecs
import os
from typing import BinaryIO

BLOCK = 1 << 20  # bytes read at a time, forwards or backwards
MAX_LINE_CHARS = 4000  # default cap of one shown line (a traceback's longest lines fit)


def tail_offset(fh: BinaryIO, lines: int) -> int:
    """Where the last `lines` lines of the file start, found by reading backwards block by block
    (a final newline ends the last line; it does not start an empty one)."""
    end = fh.seek(0, os.SEEK_END)
    if lines <= 0 or end == 0:
        return 0
    fh.seek(end - 1)
    pos = end - 1 if fh.read(1) == b"\n" else end
    found = 0
    while pos > 0:
        start = max(0, pos - BLOCK)
        fh.seek(start)
        block = fh.read(pos - start)
        cut = len(block)
        while (cut := block.rfind(b"\n", 0, cut)) >= 0:
            found += 1
            if found == lines:
                return start + cut + 1
        pos = start
    return 0


class CappedLines:
    """Bytes of a log in, text to print out: lines longer than `max_chars` characters are cut
    there and end with a marker saying how many characters were left out. Text is handed on as
    it comes (a line need not be complete), so memory stays at one block. `max_chars` 0: no cap."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS):
        self.max_chars = max_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._shown = 0  # characters of the current line handed on
        self._left_out = 0  # characters of the current line past the cap

    def feed(self, data: bytes) -> str:
        return self._cap(self._decoder.decode(data))

    def close(self) -> str:
        """What is left at the end of the log (a last line without a newline gets its marker)."""
        return self._cap(self._decoder.decode(b"", final=True)) + self._marker()

    def _cap(self, text: str) -> str:
        if not self.max_chars:
            return text
        out = []
        pieces = text.split("\n")  # lines end at "\n" only, as `tail_offset` counts them
        for number, body in enumerate(pieces):
            room = max(self.max_chars - self._shown, 0)
            kept = body[:room]
            out.append(kept)
            self._shown += len(kept)
            self._left_out += len(body) - len(kept)
            if number < len(pieces) - 1:  # the line ends here
                out.append(self._marker() + "\n")
                self._shown = self._left_out = 0
        return "".join(out)

    def _marker(self) -> str:
        return f" … [{self._left_out:,} more characters of this line left out]" if self._left_out else ""


def read_blocks(fh: BinaryIO):
    """The rest of the file, block by block."""
    while block := fh.read(BLOCK):
        yield block
