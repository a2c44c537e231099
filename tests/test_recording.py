"""The recording format: whole lines on disk; a reader that survives crashes, refuses strangers."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from kepler_top.recording import RecordingError, RecordingReader, RecordingWriter
from recording_support import FixtureNode, scripted_run


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    return scripted_run(FixtureNode(tmp_path_factory.mktemp("node")))


def _write(path, snaps, *, close=True):
    """Write ``snaps``; return the file size after the header and after each line."""
    w = RecordingWriter(str(path), node="fixture-node", source="rapl-sysfs")
    ends = [w.bytes]
    for s in snaps:
        w.write(s)
        ends.append(w.bytes)
    if close:
        w.close()
    else:
        os.close(w._fd)  # as a SIGKILL would: no gzip trailer, nothing more written
    return ends


def _read_all(path):
    warnings = []
    with RecordingReader(str(path), warn=warnings.append) as r:
        return r.header, [s for s in r.snapshots()], warnings


@pytest.mark.parametrize("name", ["run.jsonl", "run.jsonl.gz"])
def test_written_snapshots_read_back_identical(tmp_path, snaps, name):
    _write(tmp_path / name, snaps)
    header, back, warnings = _read_all(tmp_path / name)
    assert header.node == "fixture-node" and header.source == "rapl-sysfs"
    assert header.started.endswith("Z")
    assert [s.to_dict() for s in back] == [s.to_dict() for s in snaps]
    assert warnings == []


def test_plain_file_is_one_json_document_a_line_after_the_header(tmp_path, snaps):
    _write(tmp_path / "run.jsonl", snaps[:3])
    lines = (tmp_path / "run.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    first = json.loads(lines[0])
    assert first["format"] == "kepler-top-recording" and first["version"] == 1
    assert [json.loads(x)["timestamp"] for x in lines[1:-1]] == [s.timestamp for s in snaps[:3]]


def test_gzip_file_is_real_gzip(tmp_path, snaps):
    _write(tmp_path / "run.jsonl.gz", snaps[:2])
    text = gzip.decompress((tmp_path / "run.jsonl.gz").read_bytes()).decode()
    assert len(text.splitlines()) == 3


def test_every_cut_of_a_plain_file_keeps_each_whole_line(tmp_path, snaps):
    ends = _write(tmp_path / "full.jsonl", snaps)
    data = (tmp_path / "full.jsonl").read_bytes()
    cut = tmp_path / "cut.jsonl"
    # Cut inside each line (and one byte short of its newline): the lines before it stay.
    for i in range(1, len(ends)):
        for at in (ends[i - 1] + 1, (ends[i - 1] + ends[i]) // 2, ends[i] - 2):
            cut.write_bytes(data[:at])
            _, back, warnings = _read_all(cut)
            assert [s.timestamp for s in back] == [s.timestamp for s in snaps[: i - 1]]
            assert len(warnings) == 1 and "cut short" in warnings[0] and str(cut) in warnings[0]


def test_last_line_whole_but_for_its_newline_is_kept(tmp_path, snaps):
    _write(tmp_path / "run.jsonl", snaps[:3])
    path = tmp_path / "run.jsonl"
    path.write_bytes(path.read_bytes()[:-1])
    _, back, warnings = _read_all(path)
    assert len(back) == 3 and warnings == []


def test_gzip_without_trailer_keeps_every_line_and_says_so(tmp_path, snaps):
    _write(tmp_path / "killed.jsonl.gz", snaps, close=False)
    _, back, warnings = _read_all(tmp_path / "killed.jsonl.gz")
    assert len(back) == len(snaps)
    assert len(warnings) == 1 and "trailer" in warnings[0]


def test_every_cut_of_a_gzip_file_keeps_each_line_flushed_before_it(tmp_path, snaps):
    ends = _write(tmp_path / "full.jsonl.gz", snaps, close=False)
    data = (tmp_path / "full.jsonl.gz").read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    for at in range(ends[0], len(data), max(1, len(data) // 97)):
        cut.write_bytes(data[:at])
        _, back, _ = _read_all(cut)
        whole = sum(1 for e in ends[1:] if e <= at)
        # Lines flushed before the cut are all there; a later one only if it decompressed whole.
        assert len(back) >= whole
        assert [s.timestamp for s in back] == [s.timestamp for s in snaps[: len(back)]]


def test_damaged_line_in_the_middle_is_skipped_and_the_rest_kept(tmp_path, snaps):
    _write(tmp_path / "run.jsonl", snaps[:4])
    path = tmp_path / "run.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    path.write_bytes(b"\n".join(lines))
    _, back, warnings = _read_all(path)
    assert [s.timestamp for s in back] == [snaps[0].timestamp, *(s.timestamp for s in snaps[2:4])]
    assert len(warnings) == 1 and "line 3" in warnings[0]


@pytest.mark.parametrize("first_line, says", [
    (b'{"format": "kepler-top-recording", "version": 2, "node": "n"}\n',
     "version 2, and this kepler-top reads version 1"),
    (b'{"format": "something-else", "version": 1}\n', "is not a kepler-top recording"),
    (b"timestamp,level,id\n", "is not a kepler-top recording"),
    (b"", "is empty"),
])
def test_unknown_header_is_refused_naming_the_file(tmp_path, first_line, says):
    path = tmp_path / "other.jsonl"
    path.write_bytes(first_line)
    with pytest.raises(RecordingError) as e:
        RecordingReader(str(path))
    assert says in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_gz_name_on_a_plain_file_is_refused(tmp_path, snaps):
    _write(tmp_path / "run.jsonl", snaps[:1])
    os.rename(tmp_path / "run.jsonl", tmp_path / "run.jsonl.gz")
    with pytest.raises(RecordingError, match="is not gzip-compressed"):
        RecordingReader(str(tmp_path / "run.jsonl.gz"))


def test_writer_never_overwrites_a_file(tmp_path):
    (tmp_path / "keep.jsonl").write_text("precious\n")
    with pytest.raises(RecordingError, match="already exists"):
        RecordingWriter(str(tmp_path / "keep.jsonl"), node="n", source="s")
    assert (tmp_path / "keep.jsonl").read_text() == "precious\n"


def test_vanished_directory_is_an_error_at_the_next_line(tmp_path, snaps):
    d = tmp_path / "gone"
    d.mkdir()
    w = RecordingWriter(str(d / "run.jsonl"), node="n", source="s")
    w.write(snaps[0])
    (d / "run.jsonl").unlink()
    d.rmdir()
    with pytest.raises(RecordingError, match="was removed"):
        w.write(snaps[1])
    w.close()


@pytest.mark.parametrize("name", ["run.jsonl", "run.jsonl.gz"])
def test_append_adds_lines_under_the_same_header(tmp_path, snaps, name):
    path = tmp_path / name
    _write(path, snaps[:3])
    with RecordingWriter(str(path), node="fixture-node", source="rapl-sysfs", append=True) as w:
        for s in snaps[3:]:
            w.write(s)
    header, back, warnings = _read_all(path)
    assert [s.to_dict() for s in back] == [s.to_dict() for s in snaps]
    assert warnings == [] and header.node == "fixture-node"


@pytest.mark.parametrize("cut, kept", [(-1, 3), (-9, 2)])
def test_append_after_a_crash_keeps_every_whole_line(tmp_path, snaps, cut, kept):
    path = tmp_path / "run.jsonl"
    _write(path, snaps[:3])
    # -1: only the newline lost (the line is whole); -9: the line itself cut short.
    path.write_bytes(path.read_bytes()[:cut])
    with RecordingWriter(str(path), node="fixture-node", source="rapl-sysfs", append=True) as w:
        w.write(snaps[3])
    _, back, warnings = _read_all(path)
    assert [s.timestamp for s in back] == [s.timestamp for s in snaps[:kept]] + [snaps[3].timestamp]
    assert warnings == []


def test_append_to_a_torn_gzip_or_another_node_is_refused(tmp_path, snaps):
    path = tmp_path / "run.jsonl.gz"
    _write(path, snaps[:3], close=False)
    with pytest.raises(RecordingError, match="was cut short"):
        RecordingWriter(str(path), node="fixture-node", source="rapl-sysfs", append=True)
    other = tmp_path / "other.jsonl"
    _write(other, snaps[:1])
    with pytest.raises(RecordingError, match="records node fixture-node, not web-3"):
        RecordingWriter(str(other), node="web-3", source="rapl-sysfs", append=True)


def test_a_gzip_file_that_is_not_a_recording_says_so(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"hello"))
    warnings = []
    with pytest.raises(RecordingError) as e:
        RecordingReader(str(path), warn=warnings.append)
    assert "is not a kepler-top recording" in str(e.value) and str(path) in str(e.value)
    assert warnings == []


def test_a_header_cut_short_says_so(tmp_path):
    path = tmp_path / "torn.jsonl"
    path.write_bytes(b'{"format":"kepler-top-recording","vers')
    with pytest.raises(RecordingError, match="header line is cut short"):
        RecordingReader(str(path))


def test_a_directory_is_not_a_recording_to_create(tmp_path):
    for append in (False, True):
        with pytest.raises(RecordingError) as e:
            RecordingWriter(str(tmp_path), node="n", source="estimator", append=append)
        assert f"{tmp_path} is a directory" in str(e.value)
        assert "--append" not in str(e.value)
