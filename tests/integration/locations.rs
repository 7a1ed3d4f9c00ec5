//! Known blob locations: a blob pushed to one repository of a registry is mounted, not
//! uploaded, into another; a mount the registry refuses becomes an upload; a location that
//! no longer holds the blob is forgotten; `--no-cache` writes no cache.

use crate::util::*;

fn pack_to(d: &TestDir, target: &str, extra: &[&str]) -> String {
    let mut args = vec!["--plain-http"];
    args.extend_from_slice(extra);
    args.extend(["pack", "-f", "pack.yaml", target]);
    packed_digest(&run(&d.path, &args, &[]))
}

#[test]
fn a_blob_known_in_another_repository_is_mounted_and_a_stale_location_is_forgotten() {
    let registry = RegistryServer::start();
    let d = TestDir::new();
    d.write("big.bin", vec![5u8; 3 << 20]);
    d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
    let layer = sha256(&vec![5u8; 3 << 20]);
    pack_to(&d, &registry.reference("team/one:v1"), &[]);
    // Another repository: the layer is mounted from team/one, no byte of it uploaded.
    pack_to(&d, &registry.reference("team/two:v1"), &[]);
    let log = registry.log();
    let mounts = log_requests(&log, "POST", "/v2/team/two/blobs/uploads/?");
    assert!(
        mounts
            .iter()
            .any(|l| l.contains("from=team%2Fone") && l.contains("\" 201 ")),
        "{log}"
    );
    assert!(
        log_requests(&log, "PATCH", "/v2/team/two/").is_empty(),
        "{log}"
    );
    let puts = log_requests(&log, "PUT", "/v2/team/two/blobs/uploads/");
    assert!(
        puts.iter().all(|l| !l.contains(&layer["sha256:".len()..])),
        "the layer was uploaded: {log}"
    );
    // The blob leaves both repositories: the next push cannot mount it, uploads it, and
    // forgets both places.
    for repo in ["team/one", "team/two"] {
        let o = std::process::Command::new("curl")
            .args(["-sf", "-X", "DELETE"])
            .arg(format!("http://{}/v2/{repo}/blobs/{layer}", registry.addr))
            .output()
            .expect("curl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    pack_to(&d, &registry.reference("team/three:v1"), &[]);
    let log = registry.log();
    assert_eq!(
        log_requests(&log, "POST", "/v2/team/three/blobs/uploads/?").len(),
        2,
        "{log}"
    );
    assert!(
        !log_requests(&log, "PUT", "/v2/team/three/blobs/uploads/").is_empty(),
        "uploaded: {log}"
    );
    pack_to(&d, &registry.reference("team/four:v1"), &[]);
    let log = registry.log();
    let four = log_requests(&log, "POST", "/v2/team/four/blobs/uploads/?");
    assert_eq!(four.len(), 1, "only team/three is known now: {log}");
    assert!(
        four[0].contains("from=team%2Fthree") && four[0].contains("\" 201 "),
        "{log}"
    );
}

#[test]
fn a_mount_the_registry_refuses_becomes_an_upload() {
    let tr = TokenRegistry::start("alice", "pw");
    let d = TestDir::new();
    d.write("big.bin", vec![6u8; 2 << 20]);
    d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
    let auth = ["-u", "alice", "-p", "pw"];
    let pack = |target: &str| {
        let mut args = vec!["--plain-http"];
        args.extend(auth);
        args.extend(["pack", "-f", "pack.yaml", target]);
        packed_digest(&run(&d.path, &args, &[]))
    };
    let first = pack(&tr.registry.reference("private/src:v1"));
    // Nobody may read private/src any more: the mount's token cannot pull from it.
    tr.denied
        .lock()
        .expect("lock")
        .insert("private/src".to_string());
    let second = pack(&tr.registry.reference("public/dst:v1"));
    assert_eq!(first, second);
    let log = tr.registry.log();
    let posts = log_requests(&log, "POST", "/v2/public/dst/blobs/uploads/?");
    assert!(
        posts.iter().any(|l| l.contains("from=private%2Fsrc")),
        "a mount was tried: {log}"
    );
    assert!(
        posts.iter().all(|l| !l.contains("\" 201 ")),
        "the registry could not mount: {log}"
    );
    assert!(
        !log_requests(&log, "PUT", "/v2/public/dst/blobs/uploads/").is_empty(),
        "uploaded instead: {log}"
    );
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "-u",
            "alice",
            "-p",
            "pw",
            "verify",
            &tr.registry.reference("public/dst:v1"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn no_cache_writes_nothing_into_the_cache_dir() {
    let registry = RegistryServer::start();
    let d = TestDir::new();
    d.write("big.bin", vec![7u8; 10 << 20]);
    d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
    pack_to(&d, &registry.reference("nc/one:v1"), &["--no-cache"]);
    pack_to(
        &d,
        &format!("oci://{}:v1", d.join("layout").display()),
        &["--no-cache"],
    );
    assert!(
        !d.join("xdg-cache").exists() || snapshot(&d.join("xdg-cache")).is_empty(),
        "{:?}",
        snapshot(&d.join("xdg-cache")).keys().collect::<Vec<_>>()
    );
    // Without it, the same packs fill the digest and location caches.
    pack_to(&d, &registry.reference("nc/two:v1"), &[]);
    let cached = snapshot(&d.join("xdg-cache"));
    assert!(
        cached.keys().any(|k| k.starts_with("oci-packer/digests/")),
        "{:?}",
        cached.keys()
    );
    assert!(
        cached
            .keys()
            .any(|k| k.starts_with("oci-packer/locations/")),
        "{:?}",
        cached.keys()
    );
}

#[test]
fn a_copy_from_a_layout_mounts_what_the_registry_holds_elsewhere() {
    let registry = RegistryServer::start();
    let d = TestDir::new();
    d.write("big.bin", vec![8u8; 2 << 20]);
    d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
    let layout = format!("oci://{}:v1", d.join("layout").display());
    pack_to(&d, &layout, &[]);
    pack_to(&d, &registry.reference("lay/one:v1"), &[]);
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "copy",
            &layout,
            &registry.reference("lay/copy:v1"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let result: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(result["stats"]["mounted"], 1, "{result}");
    assert!(log_requests(&registry.log(), "PATCH", "/v2/lay/copy/").is_empty());
}

/// A registry that answers a mount with 201 for another digest, and takes uploads.
fn lying_registry(uploads: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> HttpServer {
    HttpServer::with_handler(move |req| {
        let path = req.path.as_str();
        match req.method.as_str() {
            "GET" if path == "/v2/" => Response::status(200),
            "HEAD" => Response::status(404),
            "POST" if path.contains("mount=") => Response::status(201).header(
                "Docker-Content-Digest",
                &format!("sha256:{}", "0".repeat(64)),
            ),
            "POST" => Response::status(202).header("Location", "/v2/r/two/blobs/uploads/u1"),
            "PUT" => {
                uploads.lock().expect("lock").push(path.to_string());
                Response::status(201)
            }
            _ => Response::status(404),
        }
    })
}

#[test]
fn a_mount_answered_for_another_digest_is_not_a_mount() {
    let d = TestDir::new();
    let data = vec![9u8; 2 << 20];
    d.write("big.bin", &data);
    d.write("pack.yaml", "items:\n  - from: file://big.bin\n");
    let uploads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = lying_registry(uploads.clone());
    // A location planted as a pack would have recorded it.
    let layer = sha256(&data);
    let host_key = sha256(server.addr.as_bytes())["sha256:".len()..][..32].to_string();
    d.write(
        &format!(
            "xdg-cache/oci-packer/locations/{host_key}/{}",
            &layer["sha256:".len()..]
        ),
        "r/one",
    );
    for p in [
        "xdg-cache",
        "xdg-cache/oci-packer",
        "xdg-cache/oci-packer/locations",
    ] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let o = run(
        &d.path,
        &[
            "--plain-http",
            "--format",
            "json",
            "pack",
            "-f",
            "pack.yaml",
            &format!("{}/r/two:v1", server.addr),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let result: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(result["stats"]["mounted"], 0, "{result}");
    assert!(
        uploads
            .lock()
            .expect("lock")
            .iter()
            .any(|p| p.contains(&layer.replace(':', "%3A")) || p.contains(&layer)),
        "the layer was uploaded: {:?}",
        uploads.lock().expect("lock")
    );
}
