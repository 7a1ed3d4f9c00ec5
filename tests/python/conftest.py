"""Fixtures: temp dirs with files, a real Distribution registry and an S3 server on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time

import pytest


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "schema.json").write_text('{"type": "object"}')
    (tmp_path / "data" / "nested").mkdir(parents=True)
    (tmp_path / "data" / "one.txt").write_text("1")
    (tmp_path / "data" / "nested" / "two.txt").write_text("2")
    (tmp_path / "pack.yaml").write_text(
        "type: application/vnd.example.py\n"
        "config: {from: file://schema.json}\n"
        "items:\n"
        "  - from: file://a.txt\n"
        "  - from: dir://data\n"
    )
    return tmp_path


def _start_registry(d, extra=""):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = d / "config.yml"
    cfg.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{extra}"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("registry did not start")


@pytest.fixture()
def basic_auth_registry(tmp_path_factory):
    """A registry that wants user "alice", password "pw" (htpasswd)."""
    d = tmp_path_factory.mktemp("auth-registry")
    out = subprocess.run(["htpasswd", "-Bbn", "alice", "pw"], capture_output=True, check=True)
    (d / "htpasswd").write_bytes(out.stdout)
    proc, addr = _start_registry(d, f"auth:\n  htpasswd:\n    realm: test\n    path: {d}/htpasswd\n")
    try:
        yield addr
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture()
def registry(tmp_path_factory):
    """A Distribution registry (Debian's docker-registry) with a temp storage dir."""
    proc, addr = _start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield addr
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture()
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (accepting any credentials), with bucket "bkt" holding
    `data/one.txt` and `data/nested/two.txt`; yields its endpoint."""
    import boto3

    d = tmp_path_factory.mktemp("s3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = os.environ.get("OCI_PACKER_MOTO") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    log = open(d / "s3.log", "w")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                            env={**os.environ, "NO_COLOR": "1"})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("the S3 server did not start")
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="AKIAPYTEST", aws_secret_access_key="py-secret")
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="data/one.txt", Body=b"1")
        s3.put_object(Bucket="bkt", Key="data/nested/two.txt", Body=b"2")
        yield endpoint
    finally:
        proc.kill()
        proc.wait()
        log.close()
