"""Fixtures: temp dirs with files, and a real Distribution registry on 127.0.0.1."""

import os
import socket
import subprocess
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


@pytest.fixture()
def registry(tmp_path_factory):
    """A Distribution registry (Debian's docker-registry) with a temp storage dir."""
    d = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = d / "config.yml"
    cfg.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("registry did not start")
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
