"""The Python API against real layouts and a real registry; results equal the CLI's."""

import asyncio
import os
import pathlib
import subprocess
import sys
import threading

import pytest

import oci_packer


def cli(*args, cwd):
    return subprocess.run(["oci-packer", *args], cwd=cwd, capture_output=True, text=True)


def test_pack_equals_the_cli(files):
    d = oci_packer.pack(files / "pack.yaml", f"oci://{files}/layout:py")
    out = cli("pack", "-f", "pack.yaml", "oci://cli:v1", cwd=files)
    assert out.returncode == 0, out.stderr
    assert f"Digest: {d.digest}" in out.stdout
    assert d.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert d.artifact_type == "application/vnd.example.py"
    assert d.reference == f"oci://{files}/layout:py"
    assert d.to_dict()["digest"] == d.digest
    assert "sha256:" in repr(d)
    # str paths work the same, and so does the installed console script's --help.
    assert oci_packer.pack(str(files / "pack.yaml"), f"oci://{files}/layout:str").digest == d.digest
    assert cli("--help", cwd=files).returncode == 0


def test_pack_objects_and_dicts(files):
    from_file = oci_packer.Pack.from_yaml(files / "pack.yaml")
    from_text = oci_packer.Pack.from_str((files / "pack.yaml").read_text(), base_dir=files)
    as_dict = {
        "type": "application/vnd.example.py",
        "config": {"from": "file://schema.json"},
        "items": [{"from": "file://a.txt"}, {"from": "dir://data"}],
    }
    from_dict = oci_packer.Pack.from_dict(as_dict, base_dir=files)
    digests = {oci_packer.pack(p, f"oci://{files}/objs:{i}").digest for i, p in enumerate([from_file, from_text, from_dict])}
    assert len(digests) == 1
    assert oci_packer.pack(as_dict, f"oci://{files}/objs:dict", base_dir=files).digest in digests
    assert from_dict.validate() == []
    yaml = from_dict.to_yaml()
    assert "file://a.txt" in yaml
    assert oci_packer.Pack.from_str(yaml, base_dir=files).validate() == []


def test_validate_lists_every_problem_with_positions(files):
    (files / "bad.yaml").write_text("items:\n  - from: file://a.txt\n    platform: linux-amd64\n  - frm: x\n")
    problems = oci_packer.validate(files / "bad.yaml")
    assert [(p.field, p.line, p.column) for p in problems] == [
        ("items[0].platform", 3, 15),
        ("items[1].frm", 4, 5),
        ("items[1].from", 4, 5),
    ]
    assert "expected os/arch" in str(problems[0])


def test_each_exception_class(files):
    target = f"oci://{files}/errs:v1"
    with pytest.raises(oci_packer.PackFileError) as e:
        oci_packer.pack({"items": [{"from": "file://a.txt", "platform": "linux-amd64"}]}, target)
    assert isinstance(e.value, ValueError) and isinstance(e.value, oci_packer.OciPackerError)
    assert (e.value.field, e.value.kind) == ("items[0].platform", "pack_file")
    (files / "bad.yaml").write_text("items:\n  - from: file://a.txt\n    platform: linux-amd64\n")
    with pytest.raises(oci_packer.PackFileError) as e:
        oci_packer.pack(files / "bad.yaml", target)
    assert (e.value.line, e.value.column) == (3, 15)
    with pytest.raises(oci_packer.SourceNotFoundError) as e:
        oci_packer.pack({"items": [{"from": "file://missing.bin"}]}, target, base_dir=files)
    assert e.value.path.endswith("missing.bin") and isinstance(e.value, FileNotFoundError)
    with pytest.raises(oci_packer.DigestMismatchError) as e:
        oci_packer.pack({"items": [{"from": "file://a.txt", "digest": "sha256:" + "0" * 64}]}, target, base_dir=files)
    assert e.value.digest == "sha256:" + "0" * 64
    with pytest.raises(oci_packer.InvalidReferenceError):
        oci_packer.pack(files / "pack.yaml", "ftp://x/y")
    with pytest.raises(oci_packer.NotFoundError):
        oci_packer.list(f"oci://{files}/errs:nope")
    with pytest.raises(oci_packer.NetworkError):
        oci_packer.pack(files / "pack.yaml", "127.0.0.1:1/x:v1", plain_http=True)
    assert not (files / "errs").exists(), "no failed call wrote anything"


def test_copy_list_and_platforms(files):
    (files / "multi.yaml").write_text(
        "items:\n  - from: file://a.txt\n    platform: linux/amd64\n  - from: file://schema.json\n    platform: linux/arm64\n"
    )
    index = oci_packer.pack(files / "multi.yaml", f"oci://{files}/src:v1")
    arm = oci_packer.copy(f"oci://{files}/src:v1", f"oci://{files}/dst:arm", platform="linux/arm64")
    tree = oci_packer.list(f"oci://{files}/src:v1")["tree"]
    member = next(c for c in tree["children"] if c["descriptor"]["platform"]["architecture"] == "arm64")
    assert arm.digest == member["descriptor"]["digest"]
    entries = oci_packer.list(f"oci://{files}/src")["entries"]
    assert entries[0]["digest"] == index.digest


def test_registry_push_and_copy(files, registry):
    d = oci_packer.pack(files / "pack.yaml", f"{registry}/py/art:v1", plain_http=True)
    back = oci_packer.copy(f"{registry}/py/art:v1", f"oci://{files}/pulled:v1", plain_http=True)
    assert back.digest == d.digest
    again = oci_packer.pack(files / "pack.yaml", f"{registry}/py/art:v1", plain_http=True)
    assert again.stats["stored"] == 0 and again.stats["skipped"] == 1
    tags = oci_packer.list(f"{registry}/py/art", plain_http=True)["entries"]
    assert [t["reference"] for t in tags] == ["v1"]


def test_the_gil_is_released_while_packing(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.write(os.urandom(1 << 20) * 256)  # 256 MiB
    (tmp_path / "p.yaml").write_text("items:\n  - from: file://big.bin\n")
    count = 0
    done = threading.Event()

    def spin():
        nonlocal count
        while not done.is_set():
            count += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        oci_packer.pack(tmp_path / "p.yaml", f"oci://{tmp_path}/layout:v1")
    finally:
        done.set()
        t.join()
    assert count > 100_000, f"the other thread advanced only {count} times"


def test_works_inside_a_running_event_loop(files):
    async def main():
        await asyncio.sleep(0)
        return oci_packer.pack(files / "pack.yaml", f"oci://{files}/async:v1").digest

    assert asyncio.run(main()).startswith("sha256:")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_keeps_working_after_fork(files):
    oci_packer.pack(files / "pack.yaml", f"oci://{files}/parent:v1")
    pid = os.fork()
    if pid == 0:
        try:
            oci_packer.pack(files / "pack.yaml", f"oci://{files}/child:v1")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert oci_packer.list(f"oci://{files}/child:v1")["tree"]["descriptor"]["digest"]


def test_module_runs_as_a_script(files):
    out = subprocess.run([sys.executable, "-m", "oci_packer", "validate", "-f", "pack.yaml"], cwd=files,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "valid" in out.stdout


def test_progress_events_add_up_to_the_bytes_written(tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(1 << 20) * 20)
    (tmp_path / "small.txt").write_text("small")
    (tmp_path / "p.yaml").write_text("items:\n  - from: file://big.bin\n  - from: file://small.txt\n")
    events = []
    d = oci_packer.pack(tmp_path / "p.yaml", f"oci://{tmp_path}/layout:v1", progress=events.append)
    kinds = {e["event"] for e in events}
    assert {"stage_started", "stage_finished", "started", "finished"} <= kinds, kinds
    written = sum(e["bytes"] or 0 for e in events if e["event"] == "advanced")
    assert written == d.stats["bytes"]
    staged = sum(e["bytes"] or 0 for e in events if e["event"] == "stage_advanced")
    assert staged == 20 << 20
    titles = {e.get("title") for e in events if e["event"] == "started"}
    assert {"big.bin", "small.txt"} <= titles


def test_a_progress_callback_that_raises_is_reported(files):
    def boom(event):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        oci_packer.pack(files / "pack.yaml", f"oci://{files}/boom:v1", progress=boom)


def test_ctrl_c_stops_a_long_pack_and_leaves_the_layout_valid(tmp_path):
    import json
    import signal
    import time

    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(4 << 30)  # 4 GiB, sparse: reading it takes seconds
    (tmp_path / "small.txt").write_text("small")
    (tmp_path / "s.yaml").write_text("items:\n  - from: file://small.txt\n")
    (tmp_path / "p.yaml").write_text("items:\n  - from: file://big.bin\n")
    layout = tmp_path / "layout"
    oci_packer.pack(tmp_path / "s.yaml", f"oci://{layout}:before")
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        oci_packer.pack(tmp_path / "p.yaml", f"oci://{layout}:big")
    assert time.monotonic() - started < 2.5, "raised within about two seconds of Ctrl-C"
    index = json.loads((layout / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["before"]
    assert oci_packer.list(f"oci://{layout}:before")["tree"]["descriptor"]["digest"]


def test_logging_records_arrive(files, caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="oci_packer"):
        d = oci_packer.pack(files / "pack.yaml", f"oci://{files}/logged:v1")
    records = [r for r in caplog.records if r.name == "oci_packer"]
    packed = [r for r in records if "packed" in r.getMessage()]
    assert packed and packed[0].levelno == logging.INFO, [r.getMessage() for r in records]
    assert d.digest in packed[0].getMessage()


def test_authentication_and_invalid_argument_errors(files, basic_auth_registry):
    target = f"{basic_auth_registry}/private/a:v1"
    with pytest.raises(oci_packer.AuthenticationError) as e:
        oci_packer.pack(files / "pack.yaml", target, plain_http=True, registry_config=files / "none.json")
    assert e.value.status == 401 and "oci-packer login" in str(e.value)
    assert isinstance(e.value, PermissionError)
    d = oci_packer.pack(files / "pack.yaml", target, plain_http=True, username="alice", password="pw")
    assert d.digest.startswith("sha256:")
    with pytest.raises(oci_packer.InvalidArgumentError):
        oci_packer.pack(files / "pack.yaml", f"oci://{files}/x:v1", created="yesterday")
    with pytest.raises(oci_packer.InvalidArgumentError):
        oci_packer.pack(files / "pack.yaml", target, plain_http=True, username="alice")


def test_registry_and_io_errors(files):
    import http.server

    class Broken(http.server.BaseHTTPRequestHandler):
        def _fail(self):
            body = b'{"errors":[{"code":"UNKNOWN","message":"storage is on fire"}]}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = _fail

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # A GET (the tag list) carries the registry's error body; a HEAD cannot.
        with pytest.raises(oci_packer.RegistryError) as e:
            oci_packer.list(f"127.0.0.1:{server.server_port}/x/y", plain_http=True)
        assert (e.value.status, e.value.code) == (500, "UNKNOWN") and "storage is on fire" in str(e.value)
        with pytest.raises(oci_packer.RegistryError) as e:
            oci_packer.copy(f"127.0.0.1:{server.server_port}/x/y:v1", f"oci://{files}/out:v1", plain_http=True)
        assert e.value.status == 500
    finally:
        server.shutdown()
    # An archive is built in --tmp-dir when there is no layout to build it in: a file there fails.
    (files / "not-a-dir").write_text("x")
    with pytest.raises(oci_packer.OciIOError):
        oci_packer.pack({"items": [{"from": "dir://data", "archive": "tar"}]}, "unused", base_dir=files,
                        dry_run=True, tmp_dir=files / "not-a-dir")


@pytest.mark.parametrize("concurrency", [0, 2**62])
def test_out_of_range_concurrency_is_an_invalid_argument(files, concurrency):
    with pytest.raises(oci_packer.InvalidArgumentError) as e:
        oci_packer.pack(files / "pack.yaml", f"oci://{files}/x:v1", concurrency=concurrency)
    assert "concurrency must be between 1 and 256" in str(e.value)
    with pytest.raises(oci_packer.InvalidArgumentError):
        oci_packer.copy(f"oci://{files}/x:v1", f"oci://{files}/y:v1", concurrency=concurrency)
    assert not (files / "x").exists(), "nothing was written"


def test_result_stats_are_the_same_numbers_for_every_binding(files):
    d = oci_packer.pack(files / "pack.yaml", f"oci://{files}/stats:v1")
    assert set(d.stats) == {"stored", "skipped", "mounted", "bytes"}
    assert all(isinstance(v, int) for v in d.stats.values())
    assert d.stats["stored"] > 0 and d.stats["bytes"] > 0


ERROR_CLASSES = [
    c for c in vars(oci_packer.errors).values()
    if isinstance(c, type) and issubclass(c, oci_packer.OciPackerError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_exception_survives_pickle(cls):
    import pickle

    e = cls("a message", kind="registry", path="/p", reference="r/x:v1", digest="sha256:ab", status=401,
            code="UNAUTHORIZED", problems=[{"line": 3}], line=3, column=4, field="items[0]")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and str(back) == "a message"
    assert back._fields() == e._fields()


def test_a_raised_error_survives_pickle_with_its_fields(files):
    import pickle

    with pytest.raises(oci_packer.PackFileError) as e:
        oci_packer.pack({"items": [{"from": "file://a.txt", "platform": "linux-amd64"}]}, "oci://x:v1",
                        base_dir=files)
    back = pickle.loads(pickle.dumps(e.value))
    assert (back.field, back.line, back.kind) == (e.value.field, e.value.line, "pack_file")
    assert back.problems == e.value.problems and back.problems


def test_io_error_is_oci_io_error_and_no_builtin_is_shadowed():
    namespace: dict = {}
    exec("from oci_packer import *", namespace)
    assert "IOError" not in namespace and namespace["OciIOError"] is oci_packer.OciIOError
    with pytest.warns(DeprecationWarning):
        assert oci_packer.IOError is oci_packer.OciIOError
    assert oci_packer.errors.IOError_ is oci_packer.OciIOError


def test_login_and_logout_against_a_registry_with_htpasswd(basic_auth_registry, files, tmp_path):
    config = tmp_path / "config.json"
    with pytest.raises(oci_packer.AuthenticationError) as e:
        oci_packer.login(basic_auth_registry, "alice", "wrong", plain_http=True, registry_config=config)
    assert e.value.status == 401
    written = oci_packer.login(basic_auth_registry, "alice", "pw", plain_http=True, registry_config=config)
    assert written == str(config) and "auths" in config.read_text()
    d = oci_packer.pack(files / "pack.yaml", f"{basic_auth_registry}/py/auth:v1", plain_http=True,
                        registry_config=config)
    assert d.stats["stored"] > 0
    assert oci_packer.logout(basic_auth_registry, registry_config=config) is True
    assert oci_packer.logout(basic_auth_registry, registry_config=config) is False


def test_log_records_follow_the_loggers_level(files, caplog):
    import logging

    logger = logging.getLogger("oci_packer")
    with caplog.at_level(logging.WARNING, logger="oci_packer"):
        oci_packer.pack(files / "pack.yaml", f"oci://{files}/quiet:v1")
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]
    with caplog.at_level(logging.INFO, logger="oci_packer"):
        oci_packer.pack(files / "pack.yaml", f"oci://{files}/loud:v1")
    assert any(r.levelno == logging.INFO and "packed" in r.getMessage() for r in caplog.records)


def test_verify_finds_a_corrupted_blob(files):
    d = oci_packer.pack(files / "pack.yaml", f"oci://{files}/v:v1")
    ok = oci_packer.verify(f"oci://{files}/v:v1")
    assert ok["problems"] == [] and ok["digest"] == d.digest and ok["blobs"] >= 3
    layers = [p for p in (files / "v" / "blobs" / "sha256").iterdir() if p.read_bytes() == b"alpha"]
    layers[0].write_bytes(b"ALPHA")
    bad = oci_packer.verify(f"oci://{files}/v:v1")
    assert [p["kind"] for p in bad["problems"]] == ["digest mismatch"]
    with pytest.raises(oci_packer.NotFoundError):
        oci_packer.verify(f"oci://{files}/v:nope")


def test_delete_and_gc_a_layout(files):
    oci_packer.pack(files / "pack.yaml", f"oci://{files}/del:v1")
    dry = oci_packer.delete(f"oci://{files}/del:v1", dry_run=True)
    assert dry["dryRun"] and dry["untagged"] == ["v1"] and dry["removed"]
    real = oci_packer.delete(f"oci://{files}/del:v1")
    assert [b["digest"] for b in real["removed"]] == [b["digest"] for b in dry["removed"]]
    assert oci_packer.gc(f"oci://{files}/del")["removed"] == []
    with pytest.raises(oci_packer.InvalidArgumentError):
        oci_packer.delete(f"oci://{files}/del")


def test_extract_round_trips_and_refuses_unsafe_titles(files):
    d = oci_packer.pack(files / "pack.yaml", f"oci://{files}/x:v1")
    out = files / "extracted"
    x = oci_packer.extract(f"oci://{files}/x:v1", out)
    assert x["digest"] == d.digest and x["notes"] == [] and x["sourceDateEpoch"] is None
    assert (out / "a.txt").read_text() == "alpha" and (out / "data" / "nested" / "two.txt").read_text() == "2"
    again = oci_packer.pack(x["packFile"], f"oci://{files}/again:v1")
    assert again.digest == d.digest
    with pytest.raises(oci_packer.InvalidArgumentError):
        oci_packer.extract(f"oci://{files}/x:v1", out)
    assert oci_packer.extract(f"oci://{files}/x:v1", out, force=True)["digest"] == d.digest
    (files / "evil.yaml").write_text(
        "items:\n  - from: file://a.txt\n    annotations: {org.opencontainers.image.title: ../../evil.txt}\n"
    )
    oci_packer.pack(files / "evil.yaml", f"oci://{files}/evil:v1")
    with pytest.raises(oci_packer.UnsafeContentError) as e:
        oci_packer.extract(f"oci://{files}/evil:v1", files / "evil-out", max_bytes=1 << 20)
    assert e.value.digest and "climbs out" in str(e.value)
    assert not (files / "evil-out").exists()
    import pickle

    assert isinstance(pickle.loads(pickle.dumps(e.value)), oci_packer.UnsafeContentError)


def test_mount_and_umount_an_image(files):
    import io
    import tarfile

    layer = files / "layer.tar"
    with tarfile.open(layer, "w") as t:
        data = b"hello from the image\n"
        info = tarfile.TarInfo("etc/motd")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    (files / "cfg.json").write_text('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    (files / "image.yaml").write_text(
        "config: {from: file://cfg.json, type: application/vnd.oci.image.config.v1+json}\n"
        "items:\n  - from: file://layer.tar\n"
    )
    oci_packer.pack(files / "image.yaml", f"oci://{files}/images:v1")
    mnt = files / "mnt"
    m = oci_packer.mount(f"oci://{files}/images:v1", mnt, no_tmpfs=True)
    try:
        assert m["mounts"] == [str(mnt)] and len(m["layers"]) == 1
        assert (mnt / "etc" / "motd").read_text() == "hello from the image\n"
    finally:
        u = oci_packer.umount(mnt)
    assert u["unmounted"] == [str(mnt)]
    oci_packer.pack(files / "pack.yaml", f"oci://{files}/x:v1")
    with pytest.raises(oci_packer.InvalidArgumentError, match="not a container image"):
        oci_packer.mount(f"oci://{files}/x:v1", files / "m2")


def test_serve_answers_curl_and_stops_on_ctrl_c(files):
    import signal
    import time

    oci_packer.pack(files / "pack.yaml", f"oci://{files}/served:v1")
    script = (
        "import logging, sys, oci_packer\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "try:\n"
        f"    oci_packer.serve('oci://{files}/served', addr='127.0.0.1:0', tag_ttl=5)\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped cleanly', flush=True)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = None
        deadline = time.monotonic() + 60
        while base is None:
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else ""
            line = p.stderr.readline()
            if " on http://" in line:
                base = line.split(" on ", 1)[1].split()[0]
        got = subprocess.run(["curl", "-sS", "-D", "-", f"{base}/v1?title=a.txt"], capture_output=True, text=True)
        assert got.returncode == 0, got.stderr
        assert "200" in got.stdout.splitlines()[0]
        assert "cache-control: public, max-age=5" in got.stdout.lower()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        assert "stopped cleanly" in out
    finally:
        if p.poll() is None:
            p.kill()
    with pytest.raises(oci_packer.InvalidArgumentError, match="registry host"):
        oci_packer.serve("not a host/x")


def test_s3_sources_read_credentials_from_the_environment(files, s3_server, monkeypatch, tmp_path):
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPYTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "py-secret")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from_s3 = oci_packer.pack({"items": [{"from": f"s3+{s3_server}/bkt/data/"}]}, f"oci://{tmp_path}/s3:v1")
    from_disk = oci_packer.pack({"items": [{"from": "dir://data"}]}, f"oci://{tmp_path}/disk:v1",
                                base_dir=str(files))
    assert from_s3.digest == from_disk.digest
    with pytest.raises(oci_packer.SourceNotFoundError) as e:
        oci_packer.pack({"items": [{"from": f"s3+{s3_server}/bkt/data/missing.txt"}]}, f"oci://{tmp_path}/x:v1")
    assert "missing.txt" in str(e.value)
