"""TFRecord framing of one event file, read incrementally from a remembered offset.

A frame is ``length (8 bytes) | masked CRC of length (4) | data | masked CRC of data (4)``.
:class:`FrameReader` yields every intact frame's data and remembers where it stopped, so the
next :meth:`FrameReader.read` costs what was appended since. Damage is survived, never hidden:

- a truncated last frame (a file still being written) ends the read quietly; the next read
  looks at it again;
- a frame whose data fails its checksum is skipped with one warning naming file and offset;
- after a length that fails its checksum (warned once), the reader scans forward byte by
  byte to the next intact frame, and a later read goes on scanning where this one stopped.

Nothing is warned twice, however often a growing file is read.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator

import google_crc32c

from tbkit.data import logdir
from tbkit.data.errors import DataLossWarning

HEADER = struct.Struct("<QI")  # data length, its masked CRC
OVERHEAD = HEADER.size + 4  # bytes of a frame around its data
_BLOCK = 1 << 20  # bytes read at once


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """``data`` framed as one TFRecord (for tests and tools that write event files)."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack(
        "<I", masked_crc(data)
    )


def warn(message: str) -> None:
    """One ``DataLossWarning``, the way every reader of tbkit words it."""
    warnings.warn(f"tbkit: {message}", DataLossWarning, stacklevel=3)


class FrameReader:
    """The intact frames of one file, from where the last read stopped.

    Args:
        path: the event file.
        quiet: warn about nothing (a second pass over data a first pass warned about).
        source: the logdir it belongs to, which opens it (default: a local file).
    """

    __slots__ = ("path", "offset", "quiet", "source", "_scanning", "_unreadable")

    def __init__(self, path: str, quiet: bool = False, source: logdir.Logdir = logdir.LOCAL):
        self.path = path
        self.source = source
        self.offset = 0  #: where the unread bytes start
        self.quiet = quiet
        self._scanning = False  # looking for the next intact frame after a bad length
        self._unreadable: str | None = None  # why the file could not be read, once warned

    @property
    def skipped(self) -> bool:
        """Whether the last read could not open the file (and warned why)."""
        return self._unreadable is not None

    @property
    def where(self) -> str:
        """The file as messages name it (a URL for an object)."""
        return self.source.show(self.path)

    def _warn(self, message: str) -> None:
        if not self.quiet:
            warn(message)

    def read(self, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, data)`` of the intact frames that end by ``limit`` (default: the
        file's size now), and advance :attr:`offset` past each frame as it is yielded.

        Raises:
            StorageError: an object could not be read for a reason that may pass (a timeout,
                the network); the next read tries again from the same offset.
        """
        listed = self.source.listed_size(self.path)
        if listed is not None and listed < self.offset:  # uploaded again, shorter: a new file
            self._warn(f"{self.where} is shorter than the {self.offset} bytes already read "
                       "(replaced?); reading it again from the start.")  # fmt: skip
            self.offset, self._scanning = 0, False
        if listed is not None and listed <= self.offset and not self._scanning:
            return  # an object that has not grown: not even a request
        f = self._open()
        if f is None:
            return
        try:
            with f:
                size = f.seek(0, 2)
                if limit is not None:
                    size = min(size, limit)
                if not self._scanning:
                    yield from self._intact(f, size)
                yield from self._careful(f, size)
        except (logdir.StorageError, GeneratorExit):
            raise
        except (FileNotFoundError, PermissionError) as e:  # gone, or not readable (archived)
            if not self.source.remote:
                raise
            self._skip(str(e))
        except Exception as e:  # an object store's read failed: one line, tried again later
            if not self.source.remote:
                raise
            raise logdir.explain(self.where, "read", e) from e

    def _skip(self, why: str) -> None:
        """Warn, once per reason, that the file cannot be read."""
        if self._unreadable != why:
            self._unreadable = why
            self._warn(f"skipped event file {self.where}: {why}")

    def _open(self):
        """The file, opened for reading; None (warned once per reason) if it cannot be."""
        try:
            f = self.source.open(self.path)
        except OSError as e:  # gone since it was listed, unreadable, or not a regular file
            self._skip(str(e))
            return None
        self._unreadable = None
        return f

    def _intact(self, f, size: int) -> Iterator[tuple[int, bytes]]:
        """The fast path: big blocks, both checksums per frame; stops at the first frame that
        is not intact, for :meth:`_careful` to take over at :attr:`offset`."""
        offset = base = self.offset  # buffer holds the file's bytes from offset base on
        buffer = b""
        header_size, unpack, crc = HEADER.size, HEADER.unpack_from, google_crc32c.value
        while offset + header_size <= size:
            at = offset - base
            if at + header_size > len(buffer):
                f.seek(offset)
                buffer, base, at = f.read(min(max(_BLOCK, header_size), size - offset)), offset, 0
                if len(buffer) < header_size:
                    return
            length, length_crc = unpack(buffer, at)
            c = crc(buffer[at : at + 8])  # masked_crc, inlined: this loop runs once a record
            if (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF != length_crc:
                return
            end = offset + header_size + length + 4
            if end > size:
                return
            if end - base > len(buffer):
                f.seek(offset)
                buffer, base, at = f.read(max(_BLOCK, end - offset)), offset, 0
                if len(buffer) < end - offset:
                    return
            data = buffer[at + header_size : at + header_size + length]
            c = crc(data)
            if (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF != int.from_bytes(
                buffer[end - base - 4 : end - base], "little"
            ):
                return
            self.offset = end
            yield offset, data
            offset = end

    def _frame_at(self, f, offset: int, size: int) -> tuple[str, bytes]:
        """``("ok", data)``, ``("data", data)`` (data checksum fails), ``("length", b"")``
        (length checksum fails) or ``("end", b"")`` (no whole frame before ``size``)."""
        if offset + HEADER.size > size:
            return "end", b""
        f.seek(offset)
        header = f.read(HEADER.size)
        if len(header) < HEADER.size:
            return "end", b""
        length, length_crc = HEADER.unpack(header)
        if masked_crc(header[:8]) != length_crc:
            return "length", b""
        if offset + OVERHEAD + length > size:
            return "end", b""  # never read a length past the end
        data, footer = f.read(length), f.read(4)
        return ("ok" if masked_crc(data) == int.from_bytes(footer, "little") else "data"), data

    def _careful(self, f, size: int) -> Iterator[tuple[int, bytes]]:
        """Frame by frame from :attr:`offset`: skip and warn about damage, resynchronise."""
        while True:
            offset = self.offset
            kind, data = self._frame_at(f, offset, size)
            if kind == "end":
                return
            if self._scanning:  # only an intact frame ends the scan
                if kind == "ok":
                    self._scanning = False
                else:
                    self.offset = offset + 1
                    continue
            if kind == "length":
                self._warn(f"corrupt record length in {self.where} at byte offset {offset}; "
                           "skipping to the next intact record.")  # fmt: skip
                self._scanning = True
                self.offset = offset + 1
                continue
            self.offset = offset + OVERHEAD + len(data)
            if kind == "ok":
                yield offset, data
            else:
                self._warn(f"skipped a corrupt record (data checksum mismatch) in {self.where} "
                           f"at byte offset {offset}.")  # fmt: skip
