"""fsspec access, atomic writes and secret redaction, on the local disk.  Unit tests."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from pipeline.errors import InputError, MissingDependency
from pipeline.fs import (
    atomic_writer,
    get_fs,
    is_local,
    join_uri,
    list_names,
    local_path,
    read_json,
    redact,
    write_bytes_atomic,
    write_json,
)


def test_atomic_writer_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out" / "part.bin"
    with pytest.raises(RuntimeError):
        with atomic_writer(str(target)) as f:
            f.write(b"half of it")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert os.listdir(tmp_path / "out") == []  # no temporary file left either


def test_atomic_writer_replaces_whole_files(tmp_path):
    target = str(tmp_path / "a.json")
    write_bytes_atomic(target, b"old")
    tmp_dir = str(tmp_path / "_state" / "tmp")
    with atomic_writer(target, tmp_dir=tmp_dir) as f:
        f.write(b"new")
        assert open(target, "rb").read() == b"old"  # readers see the old file until the end
    assert open(target, "rb").read() == b"new"
    assert os.listdir(tmp_dir) == []  # the temporary went where it was told, and is gone


def test_json_files_are_redacted_and_missing_ones_are_none(tmp_path):
    so = {"key": "AKIAEXAMPLE", "client_kwargs": {"endpoint_url": "http://x", "aws_session_token": "tok-123456"}}
    p = str(tmp_path / "s.json")
    write_json(p, {"note": "used AKIAEXAMPLE and tok-123456 at http://x"}, so)
    text = open(p).read()
    assert "AKIAEXAMPLE" not in text and "tok-123456" not in text and "http://x" in text
    assert read_json(p)["note"].count("***") == 2
    assert read_json(str(tmp_path / "missing.json")) is None
    (tmp_path / "broken.json").write_text("{not json")
    assert read_json(str(tmp_path / "broken.json")) is None


def test_redact_masks_secrets_at_any_depth_and_nothing_else():
    so = {"key": "abcd1234", "secret": "s3cr3t-value", "anon": False, "region": "eu-west-1",
          "client_kwargs": {"credentials": {"password": "hunter22"}}, "sas_token": "sv=2020&sig=xyz"}
    text = "abcd1234 s3cr3t-value hunter22 sv=2020&sig=xyz eu-west-1"
    assert redact(text, so) == "*** *** *** *** eu-west-1"
    plain = "abcd1234 s3cr3t-value hunter22 eu-west-1"
    assert redact(plain, None) == plain  # options never opened: nothing to know


def test_redact_masks_secrets_of_stores_opened_and_signed_url_parameters():
    """Retry logs are written far from the options: the secrets of every store this process
    opened are masked anyway, and so are signed-URL query parameters a client quotes."""
    so = {"key": "AKIAREMEMBERED1", "secret": "remembered-secret-value"}
    get_fs("s3://bucket/x", so)
    assert redact("denied for AKIAREMEMBERED1 / remembered-secret-value", None) == "denied for *** / ***"
    url = "GET https://acct.blob.core.windows.net/c/b.jpg?sv=2022-11-02&se=2026&sig=Zm9vYmFy%3D&sp=r failed"
    assert redact(url, None) == "GET https://acct.blob.core.windows.net/c/b.jpg?sv=2022-11-02&se=2026&sig=***&sp=r failed"
    s3 = "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123 timed out"
    assert redact(s3, None) == "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=*** timed out"


def test_uri_helpers(tmp_path):
    assert is_local("/a/b") and is_local("file:///a/b") and not is_local("s3://b/k")
    assert local_path("file:///a/b") == "/a/b" and local_path("/a/b") == "/a/b" and local_path("s3://b") == "s3://b"
    assert join_uri("s3://b/prefix/", "x") == "s3://b/prefix/x"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("1")
    (tmp_path / "d" / "a.txt").write_text("1")
    assert list_names(str(tmp_path / "d")) == ["a.txt", "b.txt"]
    assert list_names(str(tmp_path / "nothing")) == []


def test_unknown_scheme_and_missing_bucket_package_are_one_line_errors():
    with pytest.raises(InputError, match=r"unknown URI scheme nosuch://"):
        get_fs("nosuch://bucket/key")
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(MissingDependency, match=r'pip install -c constraints.txt -e "\.\[gcs\]"'):
            get_fs("gs://bucket/key")
    if importlib.util.find_spec("adlfs") is None:
        with pytest.raises(MissingDependency, match=r'pip install -c constraints.txt -e "\.\[azure\]"'):
            get_fs("az://container/key")


def test_json_round_trip(tmp_path):
    p = str(tmp_path / "x" / "y.json")
    write_json(p, {"a": [1, 2], "b": None})
    assert read_json(p) == {"a": [1, 2], "b": None}
    assert json.loads(open(p).read()) == {"a": [1, 2], "b": None}
