"""The world's S3 behaves like S3 for the two kinds of client lorabot has: boto3 (bot) and urllib (pods)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import boto3
import pytest

from tests.world.s3 import S3World, urllib_get, urllib_put


def test_boto3_from_the_environment_round_trips_a_file(s3_world: S3World) -> None:
    # a client built like storage/artifacts.py builds one: from the environment only
    client = boto3.client("s3")
    payload = os.urandom(300_000)
    client.put_object(Bucket=s3_world.bucket, Key="jobs/j1/final/kana.safetensors", Body=payload)

    assert s3_world.read("jobs/j1/final/kana.safetensors") == payload
    assert s3_world.keys("jobs/j1/") == ["jobs/j1/final/kana.safetensors"]


def test_presigned_put_from_urllib_stores_the_exact_bytes_and_presigned_get_reads_them(s3_world: S3World) -> None:
    payload = os.urandom(70_000)

    status = urllib_put(s3_world.presign_put("jobs/j1/epochs/000001/sample-00.png"), payload)

    assert status == 200
    assert s3_world.read("jobs/j1/epochs/000001/sample-00.png") == payload
    assert urllib_get(s3_world.presign_get("jobs/j1/epochs/000001/sample-00.png")) == payload


def test_the_request_log_shows_what_the_uploader_sent(s3_world: S3World) -> None:
    urllib_put(s3_world.presign_put("jobs/j1/status/train.json"), b'{"phase": "training"}')

    (put,) = [r for r in s3_world.requests_for("jobs/j1/status/train.json") if r.method == "PUT"]
    assert put.status == 200
    assert put.content_length == len(b'{"phase": "training"}')
    assert put.content_type == "application/octet-stream"


def test_a_presigned_put_with_another_content_type_is_refused(s3_world: S3World) -> None:
    # the URL signs application/octet-stream; a client that sends something else must not "succeed"
    request = urllib.request.Request(
        s3_world.presign_put("jobs/j1/x.bin"), data=b"abc", method="PUT", headers={"Content-Type": "text/plain"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)

    assert refused.value.code == 403
    assert not s3_world.exists("jobs/j1/x.bin")


def test_a_presigned_get_of_a_missing_key_is_404(s3_world: S3World) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib_get(s3_world.presign_get("jobs/j1/nothing"))

    assert missing.value.code == 404


def test_each_test_gets_its_own_empty_bucket(s3_world: S3World) -> None:
    other = s3_world.new_bucket()
    s3_world.put("a", b"1")

    assert other.bucket != s3_world.bucket
    assert other.keys() == []
    assert s3_world.keys() == ["a"]
