//! Media type constants and inference from file names (SPEC §2.4).

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The OCI empty descriptor's media type.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Uncompressed tar layer.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip-compressed tar layer.
pub const LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd-compressed tar layer.
pub const LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Anything we cannot name.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// True for media types whose blobs are manifests or indexes (graph nodes with children).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST
    )
}

/// True for index-like media types.
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// Multi-part suffixes first, so `.tar.gz` wins over `.gz`.
const SUFFIXES: &[(&str, &str)] = &[
    (".tar.gz", LAYER_TAR_GZIP),
    (".tar.zst", LAYER_TAR_ZSTD),
    (".tgz", LAYER_TAR_GZIP),
    (".tzst", LAYER_TAR_ZSTD),
    (".tar", LAYER_TAR),
    (".json", "application/json"),
    (".yaml", "application/yaml"),
    (".yml", "application/yaml"),
    (".txt", "text/plain"),
    (".html", "text/html"),
    (".htm", "text/html"),
    (".css", "text/css"),
    (".js", "text/javascript"),
    (".mjs", "text/javascript"),
    (".xml", "application/xml"),
    (".svg", "image/svg+xml"),
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".gif", "image/gif"),
    (".webp", "image/webp"),
    (".avif", "image/avif"),
    (".pdf", "application/pdf"),
    (".wasm", "application/wasm"),
    (".zip", "application/zip"),
    (".gz", "application/gzip"),
    (".zst", "application/zstd"),
];

/// The media type of a file called `name` (a base name or a path), per SPEC §2.4.
///
/// A fixed table, not the host's `mime.types`, so the digest does not depend on the machine.
/// Matching is case-insensitive on the suffix.
pub fn infer(name: &str) -> &'static str {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    SUFFIXES
        .iter()
        .find(|(suffix, _)| base.len() > suffix.len() && base.ends_with(suffix))
        .map(|(_, mt)| *mt)
        .unwrap_or(OCTET_STREAM)
}

/// Annotation naming a layer's file (OCI).
pub const TITLE: &str = "org.opencontainers.image.title";
/// Annotation recording the `dir://` directory a layer came from (the Go tool's `extract`).
pub const DIR_ANNOTATION: &str = "io.arenadata.oci-packer.dir";

#[cfg(test)]
mod tests {
    use super::infer;

    #[test]
    fn table() {
        let cases = [
            ("a.tar", "application/vnd.oci.image.layer.v1.tar"),
            ("a.tar.gz", "application/vnd.oci.image.layer.v1.tar+gzip"),
            ("a.tgz", "application/vnd.oci.image.layer.v1.tar+gzip"),
            ("a.tar.zst", "application/vnd.oci.image.layer.v1.tar+zstd"),
            ("a.tzst", "application/vnd.oci.image.layer.v1.tar+zstd"),
            ("x/schema.json", "application/json"),
            ("a.yaml", "application/yaml"),
            ("a.yml", "application/yaml"),
            ("a.txt", "text/plain"),
            ("a.html", "text/html"),
            ("a.css", "text/css"),
            ("a.js", "text/javascript"),
            ("a.xml", "application/xml"),
            ("a.svg", "image/svg+xml"),
            ("a.png", "image/png"),
            ("a.jpg", "image/jpeg"),
            ("A.JPEG", "image/jpeg"),
            ("a.gif", "image/gif"),
            ("a.pdf", "application/pdf"),
            ("a.wasm", "application/wasm"),
            ("a.zip", "application/zip"),
            ("a.gz", "application/gzip"),
            ("a.zst", "application/zstd"),
            ("a.tmpl", "application/octet-stream"),
            ("Makefile", "application/octet-stream"),
            (".json", "application/octet-stream"),
            ("", "application/octet-stream"),
        ];
        for (name, want) in cases {
            assert_eq!(infer(name), want, "{name}");
        }
    }
}
