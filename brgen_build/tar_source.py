"""Tar archives of photos, such as ImageNet's `ILSVRC2012_img_train.tar` (a tar of 1,000 per-synset tars).

Two passes, both front to back and never seeking back, through a `ForwardReader`:

1. Indexing parses every tar header, including those of every inner `.tar` member, and lists each
   regular file with the byte offset of its header (`Member.offset`). The index is cached in the dataset
   root, keyed by the archive's name and size and checked against its modification time, so later runs
   and other shards skip this pass.
2. Extraction (`read_members`) visits the requested members in offset order. It moves forward to each
   header, parses it with `tarfile`, checks that it is the indexed member, and reads the data. Nothing
   is written to disk and inner tars are never extracted.

Gzip, bzip2 and xz archives work too. Indexing then decompresses the whole stream, and extraction
decompresses it up to the last requested member. Symbolic links, hard links, devices and sparse files are not listed, so they are never read.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from tqdm import tqdm

from brgen_build.errors import BrgenError
from brgen_build.files import create_temporary
from brgen_build.sources import ContainerReadError, Member

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
# Member names are decoded as UTF-8, with undecodable bytes replaced, in both passes, so that
# names always compare equal between them and can be stored in JSON manifests.
_NAME_ENCODING = {"encoding": "utf-8", "errors": "replace"}
_COMPRESSED = (
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def is_tar_archive(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error, lzma.LZMAError):
        return False


class ForwardReader:
    """A read-only file object over a byte stream that never moves the stream backwards.

    `seek` may go back only within the chunk in memory (TarFile re-reads the byte before each header),
    and raises `io.UnsupportedOperation` for anything earlier. A forward gap shorter than `seek_gap`
    bytes is read and discarded, which keeps the kernel's sequential read-ahead working on disks and
    network file systems. A longer gap is skipped with a real seek when the stream is a seekable
    uncompressed file. The default of 4 MiB is an estimate of where a seek becomes cheaper than
    reading, not a measured optimum.

    On such a file the reader also asks the kernel (posix_fadvise WILLNEED) to start reading the next
    `read_ahead` bytes while Python parses the current chunk, but only from the second chunk read in a
    row, so that a real seek to one small member does not read megabytes after it.
    """

    def __init__(
        self, stream: BinaryIO, can_seek: bool, chunk_size: int = 1 << 20, seek_gap: int = 4 << 20, read_ahead: int = 16 << 20
    ):
        self._stream = stream
        self._can_seek = can_seek
        self._seek_gap = seek_gap
        self._read_ahead = read_ahead if can_seek and hasattr(os, "posix_fadvise") else 0
        self._advised_until = 0
        self._chunks_in_a_row = 0
        self._buffer = bytearray(chunk_size)
        self._view = memoryview(self._buffer)
        self._chunk_position = 0  # stream position of self._buffer[0]
        self._end = 0  # bytes of the chunk in the buffer
        self._index = 0  # read position within the chunk

    def tell(self) -> int:
        return self._chunk_position + self._index

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        """Read the chunk that follows the current one; return False at the end of the stream."""
        self._chunk_position += self._end
        self._index = 0
        self._advise_read_ahead()
        self._end = self._stream.readinto(self._view) or 0
        return self._end > 0

    def _advise_read_ahead(self) -> None:
        self._chunks_in_a_row += 1
        if not self._read_ahead or self._chunks_in_a_row < 2 or self._chunk_position + self._read_ahead // 2 < self._advised_until:
            return
        start = max(self._chunk_position, self._advised_until)
        end = self._chunk_position + self._read_ahead
        os.posix_fadvise(self._stream.fileno(), start, end - start, os.POSIX_FADV_WILLNEED)
        self._advised_until = end

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("ForwardReader seeks to absolute positions only")
        if position < self._chunk_position:
            raise io.UnsupportedOperation(f"cannot seek back from byte {self.tell()} to byte {position}")
        gap = position - (self._chunk_position + self._end)
        if gap > 0 and self._can_seek and gap >= self._seek_gap:
            self._stream.seek(position)
            self._chunk_position, self._end, self._index = position, 0, 0
            self._chunks_in_a_row = 0
            return position
        while position > self._chunk_position + self._end:
            if not self._next_chunk():
                return self.tell()
        self._index = position - self._chunk_position
        return position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise io.UnsupportedOperation("ForwardReader.read needs a size")
        parts = []
        while size > 0:
            if self._index == self._end and not self._next_chunk():
                break
            take = min(self._end - self._index, size)
            parts.append(bytes(self._view[self._index : self._index + take]))
            self._index += take
            size -= take
        return b"".join(parts)


class _OffsetView:
    """The part of a ForwardReader that starts at `base`, so that offsets inside an inner tar start at 0."""

    def __init__(self, reader: ForwardReader, base: int):
        self._reader = reader
        self._base = base

    def tell(self) -> int:
        return self._reader.tell() - self._base

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        return self._reader.seek(self._base + position, whence) - self._base

    def read(self, size: int = -1) -> bytes:
        return self._reader.read(size)


def _next_members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Yield the members of a tar opened for random access, forgetting each one after it is yielded.

    TarFile keeps every member it has read in `members`. For ImageNet that list alone would take
    hundreds of megabytes.
    """
    while True:
        info = archive.next()
        archive.members.clear()
        if info is None:
            return
        yield info


class _LastReadStream:
    """A stream wrapper that keeps the bytes of the last read, to see why TarFile stopped."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.last_read = b""

    def read(self, size: int = -1) -> bytes:
        self.last_read = self._stream.read(size)
        return self.last_read

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(position, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def seekable(self) -> bool:
        return self._stream.seekable()


def _check_end_of_archive(stream: _LastReadStream, offset: int) -> None:
    """Raise tarfile.ReadError unless the block that ended the member list is an end-of-archive zero block.

    TarFile.next() also returns None for a header cut short or damaged after the first member, which
    would make a truncated archive look complete.
    """
    block = stream.last_read
    if len(block) < tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"the archive ends at byte {offset + len(block)} without an end-of-archive block")
    if block.count(0) != tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"invalid tar header at byte {offset}")


def _is_nested_tar(info: tarfile.TarInfo) -> bool:
    return info.isfile() and info.name.lower().endswith(".tar")


class TarContainer:
    """A tar archive, optionally of inner tars (one level deep), read front to back."""

    def __init__(self, path: Path, index_folder: Path | None = None):
        self.path = path
        self.index_folder = index_folder
        with self._open_stream() as (stream, _):
            try:
                tarfile.TarFile(fileobj=stream, **_NAME_ENCODING)
            except _READ_ERRORS as error:
                raise BrgenError(f"{path} is not a readable tar archive ({error}); check the download") from None

    @contextlib.contextmanager
    def _open_stream(self, buffered: bool = True) -> Iterator[tuple[BinaryIO, bool]]:
        """Open the archive and yield its stream, decompressed if needed, and whether the stream supports real seeks."""
        raw = open(self.path, "rb", buffering=-1 if buffered else 0)
        try:
            magic = raw.read(6)
            raw.seek(0)
            for prefix, opener in _COMPRESSED:
                if magic.startswith(prefix):
                    with opener(raw) as stream:
                        yield stream, False
                    return
            yield raw, True
        finally:
            raw.close()

    # Indexing

    @property
    def index_path(self) -> Path | None:
        if self.index_folder is None:
            return None
        size = self.path.stat().st_size
        digest = hashlib.sha256(f"{self.path.name}:{size}".encode()).hexdigest()[:12]
        return self.index_folder / f"{self.path.name}.{digest}.members.jsonl"

    def _fingerprint(self) -> dict:
        info = self.path.stat()
        return {"format": INDEX_FORMAT, "archive": str(self.path), "size": info.st_size, "mtime_ns": info.st_mtime_ns}

    def members(self) -> Iterator[Member]:
        """Yield every regular file, from the cached index when it matches the archive, else by indexing."""
        index_path = self.index_path
        if index_path is not None and index_path.is_file():
            cached = self._read_index(index_path)
            if cached is not None:
                yield from cached
                return
        yield from self._index(index_path)

    def _read_index(self, index_path: Path) -> Iterator[Member] | None:
        with open(index_path, encoding="utf-8") as handle:
            try:
                header = json.loads(handle.readline())
            except json.JSONDecodeError:
                header = None
        fingerprint = self._fingerprint()
        if not isinstance(header, dict) or {key: header.get(key) for key in ("format", "size", "mtime_ns")} != {
            key: fingerprint[key] for key in ("format", "size", "mtime_ns")
        }:
            logger.info("reals: %s changed since %s was written; indexing it again", self.path, index_path)
            return None

        def cached() -> Iterator[Member]:
            with open(index_path, encoding="utf-8") as handle:
                handle.readline()
                for line in handle:
                    path, size, offset, base, inner_tar = json.loads(line)
                    yield Member(path, size, offset, base, inner_tar)

        return cached()

    def _index(self, index_path: Path | None) -> Iterator[Member]:
        """Read every header once, yield each member and write the index cache if the pass completes."""
        logger.info("reals: indexing %s; the index is cached for later runs", self.path)
        writer = _IndexWriter(index_path, self._fingerprint()) if index_path is not None else None
        total = self.path.stat().st_size
        count = 0
        try:
            with self._open_stream(buffered=False) as (raw_stream, can_seek), tqdm(
                total=total, unit="B", unit_scale=True, desc=f"index {self.path.name}", disable=None
            ) as bar:
                stream = _LastReadStream(ForwardReader(raw_stream, can_seek))
                outer = tarfile.TarFile(fileobj=stream, **_NAME_ENCODING)
                for info in _next_members(outer):
                    for member in self._members_of(outer, info):
                        count += 1
                        if writer is not None:
                            writer.add(member)
                        yield member
                    bar.update(min(outer.offset, total) - bar.n)
                _check_end_of_archive(stream, outer.offset)
        except _READ_ERRORS as error:
            # NOTE: a damaged archive is indexed up to the damage; later photos are reported missing.
            logger.warning("reals: %s: reading stopped after %d members: %s; the archive may be truncated", self.path, count, error)
            if writer is not None:
                writer.discard()
            return
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        if writer is not None:
            writer.commit()
        logger.info("reals: %s: %d members indexed", self.path, count)

    def _members_of(self, outer: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[Member]:
        if _is_nested_tar(info):
            try:
                inner = tarfile.TarFile(fileobj=outer.extractfile(info), **_NAME_ENCODING)
            except tarfile.ReadError as error:
                logger.warning("reals: %s: %s is named .tar but is not a readable tar (%s); ignored", self.path, info.name, error)
                return
            for inner_info in _next_members(inner):
                if inner_info.isfile() and not inner_info.issparse():
                    yield Member(
                        f"{info.name}/{inner_info.name}",
                        inner_info.size,
                        offset=info.offset_data + inner_info.offset,
                        base=info.offset_data,
                        inner_tar=info.name,
                    )
        elif info.isfile() and not info.issparse():
            yield Member(info.name, info.size, offset=info.offset)

    # Extraction

    def read_members(self, members: Iterable[Member]) -> Iterator[tuple[Member, bytes | Exception]]:
        """Read the members in archive order in one forward pass; stop after the last one."""
        ordered = sorted(members, key=lambda member: member.offset)
        if not ordered:
            return
        with self._open_stream(buffered=False) as (stream, can_seek):
            reader = ForwardReader(stream, can_seek)
            for member in ordered:
                try:
                    data = self._read_one(reader, member)
                except ContainerReadError as error:
                    yield member, error
                    continue
                except _READ_ERRORS as error:
                    yield member, ContainerReadError(f"cannot read {member.path} from {self.path}: {type(error).__name__}: {error}")
                    continue
                yield member, data

    def _read_one(self, reader: ForwardReader, member: Member) -> bytes:
        if reader.seek(member.offset) != member.offset:
            raise ContainerReadError(f"{self.path} ends at byte {reader.tell()}, before {member.path}; the archive is truncated")
        view = reader if member.base == 0 else _OffsetView(reader, member.base)
        stored_name = member.path[len(member.inner_tar) + 1 :] if member.inner_tar else member.path
        info = tarfile.TarFile(fileobj=view, **_NAME_ENCODING).firstmember
        if info is None or info.name != stored_name or info.size != member.size:
            found = "no valid header" if info is None else f"{info.name!r} ({info.size} bytes)"
            raise ContainerReadError(
                f"{self.path} changed since it was indexed: expected {stored_name!r} ({member.size} bytes) at byte "
                f"{member.offset}, found {found}; delete {self.index_path or 'the index'} and run again"
            )
        reader.seek(member.base + info.offset_data)
        data = reader.read(info.size)
        if len(data) != info.size:
            raise ContainerReadError(f"{self.path} ends inside {member.path} ({len(data)} of {info.size} bytes); the archive is truncated")
        return data

    def close(self) -> None:
        pass


class _IndexWriter:
    """Write an index cache to a temporary file and rename it into place only when indexing completed."""

    def __init__(self, path: Path, fingerprint: dict):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, self._temporary = create_temporary(path.parent, ".tmp-")
        self._handle = os.fdopen(descriptor, "w", encoding="utf-8")
        self._handle.write(json.dumps(fingerprint) + "\n")

    def add(self, member: Member) -> None:
        self._handle.write(json.dumps([member.path, member.size, member.offset, member.base, member.inner_tar]) + "\n")

    def commit(self) -> None:
        self._handle.close()
        os.replace(self._temporary, self.path)

    def discard(self) -> None:
        self._handle.close()
        Path(self._temporary).unlink(missing_ok=True)
