"""Photo containers: listing members and reading chosen ones from folders, zips and (nested, compressed) tars."""

import io
import os
import zipfile

import pytest

from brgen_build.errors import BrgenError
from brgen_build.sources import ContainerReadError, FolderContainer, MemberUnreadable, ZipContainer, open_container
from brgen_build.tar_source import ForwardReader, TarContainer
from photo_archives import imagenet_photos, photo_bytes, write_folder, write_nested_tar, write_tar, write_zip


class UnseekableStream(io.RawIOBase):
    """A byte stream like a pipe: it can only be read, and records every read size."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def read_all(container, members):
    return {member.path: data for member, data in container.read_members(members)}


def test_nested_tar_lists_inner_members(tmp_path):
    archive = write_nested_tar(tmp_path / "train.tar", imagenet_photos(synsets=2, per_synset=2))
    members = list(TarContainer(archive).members())
    assert [member.path for member in members] == [
        "n00000001.tar/n00000001_0.JPEG",
        "n00000001.tar/n00000001_1.JPEG",
        "n00000002.tar/n00000002_0.JPEG",
        "n00000002.tar/n00000002_1.JPEG",
    ]
    assert members[2].logical_path == "n00000002/n00000002_0.JPEG"
    assert members[2].inner_tar == "n00000002.tar"
    assert members[2].size == len(photo_bytes(200))


def test_nested_tar_reads_only_requested_members(tmp_path):
    photos = imagenet_photos(synsets=3, per_synset=4)
    container = TarContainer(write_nested_tar(tmp_path / "train.tar", photos))
    members = list(container.members())
    wanted = [members[9], members[1], members[6]]
    result = list(container.read_members(wanted))
    assert [member.path for member, _ in result] == [members[1].path, members[6].path, members[9].path]
    assert result[0][1] == photos["n00000001"]["n00000001_1.JPEG"]
    assert result[1][1] == photos["n00000002"]["n00000002_2.JPEG"]
    assert result[2][1] == photos["n00000003"]["n00000003_1.JPEG"]


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz"])
def test_compressed_nested_tar_is_read(tmp_path, mode):
    photos = imagenet_photos(synsets=2, per_synset=3)
    container = TarContainer(write_nested_tar(tmp_path / "train.tar.x", photos, mode))
    members = list(container.members())
    data = read_all(container, [members[4]])
    assert data == {"n00000002.tar/n00000002_1.JPEG": photos["n00000002"]["n00000002_1.JPEG"]}


def test_forward_reader_rejects_seeking_back():
    reader = ForwardReader(UnseekableStream(bytes(range(200))), can_seek=False, chunk_size=16, seek_gap=32)
    assert reader.seek(50) == 50
    assert reader.read(3) == bytes([50, 51, 52])
    assert reader.seek(49) == 49  # back within the chunk in memory
    assert reader.read(1) == bytes([49])
    assert reader.seek(150) == 150
    assert reader.read(60) == bytes(range(150, 200))
    with pytest.raises(io.UnsupportedOperation, match="cannot seek back from byte 200 to byte 10"):
        reader.seek(10)


class SeekCountingFile(io.FileIO):
    seeks = 0

    def seek(self, position, whence=io.SEEK_SET):
        self.seeks += 1
        return super().seek(position, whence)


def test_forward_reader_seeks_over_long_gaps(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 64)
    with SeekCountingFile(path) as raw:
        reader = ForwardReader(raw, can_seek=True, chunk_size=64, seek_gap=1024)
        reader.seek(1000)
        assert raw.seeks == 0  # a short gap is read and discarded
        reader.seek(5000)
        assert raw.seeks == 1  # a long gap is a real seek
        assert reader.read(2) == bytes([5000 % 256, 5001 % 256])


def test_forward_reader_reads_ahead_only_sequentially(tmp_path, monkeypatch):
    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda descriptor, offset, length, advice: advised.append((offset, length)))
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(1000))
    with open(path, "rb", buffering=0) as raw:
        reader = ForwardReader(raw, can_seek=True, chunk_size=10, seek_gap=100, read_ahead=40)
        reader.read(35)  # chunks 0, 10, 20 and 30 in a row
        reader.seek(500)  # a real seek
        reader.read(15)  # chunks 500 and 510 in a row
    assert advised == [(10, 40), (50, 20), (510, 40)]


def test_tar_index_cached_until_changed(tmp_path, monkeypatch):
    archive = write_nested_tar(tmp_path / "train.tar", imagenet_photos(synsets=2, per_synset=2))
    cache = tmp_path / "cache"
    first = list(TarContainer(archive, cache).members())
    assert len(list(cache.glob("train.tar.*.members.jsonl"))) == 1

    def no_indexing(self, index_path):
        raise AssertionError("indexed again")

    monkeypatch.setattr(TarContainer, "_index", no_indexing)
    assert list(TarContainer(archive, cache).members()) == first

    os.utime(archive, ns=(1, 1))
    with pytest.raises(AssertionError, match="indexed again"):
        list(TarContainer(archive, cache).members())


def test_tar_changed_after_indexing_fails(tmp_path):
    archive = write_nested_tar(tmp_path / "train.tar", imagenet_photos(synsets=1, per_synset=2))
    container = TarContainer(archive, tmp_path / "cache")
    member = list(container.members())[1]
    stat = archive.stat()
    renamed = {"n00000001": {"n00000001_0.JPEG": photo_bytes(100), "n00000001_9.JPEG": photo_bytes(101)}}
    write_nested_tar(archive, renamed)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    [(_, error)] = TarContainer(archive, tmp_path / "cache").read_members([member])
    assert isinstance(error, ContainerReadError)
    assert "changed since it was indexed: expected 'n00000001_1.JPEG'" in str(error)


def test_truncated_tar_reports_the_cut_member(tmp_path):
    photos = {f"{i}.jpg": photo_bytes(i, size=(64, 64)) for i in range(4)}
    archive = write_tar(tmp_path / "places.tar", photos)
    container = TarContainer(archive)
    members = list(container.members())
    archive.write_bytes(archive.read_bytes()[: members[3].offset + 700])
    result = dict((member.path, data) for member, data in container.read_members(members))
    assert result["2.jpg"] == photos["2.jpg"]
    assert isinstance(result["3.jpg"], ContainerReadError)
    assert "ends inside 3.jpg" in str(result["3.jpg"])


def test_truncated_tar_indexed_up_to_cut(tmp_path):
    photos = {f"{i}.jpg": photo_bytes(i, size=(64, 64)) for i in range(4)}
    archive = write_tar(tmp_path / "places.tar", photos)
    offsets = [member.offset for member in TarContainer(archive).members()]
    archive.write_bytes(archive.read_bytes()[: offsets[3] + 100])
    assert [member.path for member in TarContainer(archive, tmp_path / "cache").members()] == ["0.jpg", "1.jpg", "2.jpg"]
    assert list((tmp_path / "cache").glob("*.jsonl")) == []


def test_tar_lists_no_links(tmp_path):
    import tarfile

    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        data = photo_bytes(1)
        info = tarfile.TarInfo("real.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, kind, target in [("soft.jpg", tarfile.SYMTYPE, "/etc/passwd"), ("hard.jpg", tarfile.LNKTYPE, "real.jpg")]:
            link = tarfile.TarInfo(name)
            link.type = kind
            link.linkname = target
            tar.addfile(link)
    assert [member.path for member in TarContainer(archive).members()] == ["real.jpg"]


def test_zip_lists_files_and_reports_bad_crc(tmp_path):
    good, damaged = photo_bytes(1), photo_bytes(2)
    archive = tmp_path / "train2017.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as output:
        output.writestr("train2017/", b"")
        output.writestr("train2017/000000000001.jpg", good)
        output.writestr("train2017/000000000002.jpg", damaged)
        link = zipfile.ZipInfo("train2017/link.jpg")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        output.writestr(link, "/etc/passwd")
    raw = bytearray(archive.read_bytes())
    start = raw.find(damaged)
    raw[start + 100] ^= 0xFF
    archive.write_bytes(bytes(raw))

    container = ZipContainer(archive)
    members = list(container.members())
    assert [member.path for member in members] == ["train2017/000000000001.jpg", "train2017/000000000002.jpg"]
    result = read_all(container, members)
    assert result["train2017/000000000001.jpg"] == good
    assert isinstance(result["train2017/000000000002.jpg"], MemberUnreadable)
    assert "Bad CRC-32" in str(result["train2017/000000000002.jpg"])


def test_folder_walks_files_not_linked_folders(tmp_path):
    folder = write_folder(tmp_path / "places", {"a/abbey/1.jpg": photo_bytes(1), "b/bar/2.jpg": photo_bytes(2)})
    outside = write_folder(tmp_path / "outside", {"3.jpg": photo_bytes(3)})
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    (folder / "a" / "file-link.jpg").symlink_to(outside / "3.jpg")
    container = FolderContainer(folder)
    assert sorted(member.path for member in container.members()) == ["a/abbey/1.jpg", "a/file-link.jpg", "b/bar/2.jpg"]
    assert container.lookup("b/bar/2.jpg").size == len(photo_bytes(2))
    assert container.lookup("b/bar/9.jpg") is None


def test_open_container_rejects_unusable_source(tmp_path):
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(BrgenError, match="neither a folder, a zip nor a tar archive"):
        open_container(tmp_path / "notes.txt")
    with pytest.raises(BrgenError, match=r"photo source .*absent.zip not found"):
        open_container(tmp_path / "absent.zip")
    assert isinstance(open_container(write_zip(tmp_path / "a.zip", {"1.jpg": photo_bytes(1)})), ZipContainer)
