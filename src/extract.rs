//! `extract REF OUTDIR` (SPEC §7.1): an artifact back into files and a `pack.yaml` that packs
//! them again to the same root digest, from a layout or a registry.
//!
//! Three steps. *Shape*: read the root (and the members of an index), decide what each layer,
//! config and member becomes. *Claim*: every output path is checked (titles absolute, with
//! `..`, NUL or colliding are refused) before anything is written. *Write*: blobs are
//! fetched, verified and written into a temp directory inside OUTDIR, archives extracted
//! safely, and only a complete result is moved into place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Serialize;

use crate::archive::unpack::{self, Beneath, Compression, UnpackOptions, Whiteouts};
use crate::assemble::{CREATED, UNKNOWN_ARTIFACT};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::blocking;
use crate::mediatype::{self, DIR_ANNOTATION, TITLE};
use crate::options::Options;
use crate::packfile::{ConfigSpec, ItemSpec, PackFile};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::source::dir::{ORAS_DIGEST, ORAS_UNPACK};
use crate::store::open::select_wanted_platform;
use crate::store::{fetch_small, Blob, Target, Targets};

/// What `extract` wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Extracted {
    /// The reference as given.
    pub reference: String,
    /// Digest of what was extracted (the member chosen with a platform).
    pub digest: String,
    /// The output directory.
    pub out_dir: PathBuf,
    /// The pack file written (`OUTDIR/pack.yaml`).
    pub pack_file: PathBuf,
    /// Files written (layers and configs; an unpacked archive counts as one).
    pub files: usize,
    /// Bytes of the blobs read.
    pub bytes: u64,
    /// `SOURCE_DATE_EPOCH` to set when packing `pack_file` again (the root's creation time,
    /// or the time in its archives), when it had one.
    pub source_date_epoch: Option<u64>,
    /// The command that packs `pack_file` again, with `SOURCE_DATE_EPOCH` and the registry
    /// flags its image items need (`TARGET` to fill in).
    pub command: String,
    /// Image members referenced from the pack file (copied to `OUTDIR/images` with
    /// `images`), by digest.
    pub images: Vec<String>,
    /// What the pack file cannot reproduce exactly (re-packing gives another digest), for
    /// people; empty for everything oci-packer writes.
    pub notes: Vec<String>,
}

/// The config descriptor that stands for "no config".
fn is_empty_config(d: &Descriptor) -> bool {
    *d == crate::assemble::empty_config().descriptor
}

/// Config media types of container images: a manifest with one is an image, not content.
fn is_image_config(media_type: &str) -> bool {
    matches!(
        media_type,
        mediatype::OCI_CONFIG | "application/vnd.docker.container.image.v1+json"
    )
}

/// A manifest member oci-packer built: its platform, config and layers.
#[derive(Debug, Clone)]
struct Built {
    platform: Option<String>,
    config: Option<Descriptor>,
    layers: Vec<Descriptor>,
}

/// One member of the artifact (the root manifest is one built member).
#[derive(Debug, Clone)]
enum Member {
    Built(Built),
    /// An image (or artifact) oci-packer did not build: an `oci://` item.
    Image {
        entry: Descriptor,
        own_type: Option<String>,
    },
}

/// What the pack file will say at the top, and the members.
#[derive(Debug)]
struct Shape {
    artifact_type: Option<String>,
    annotations: BTreeMap<String, String>,
    top_config: Option<Descriptor>,
    members: Vec<Member>,
    notes: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(data: &[u8], desc: &Descriptor, from: &str) -> Result<T> {
    crate::json::from_slice(data).map_err(|e| {
        Error::new(
            ErrorKind::Registry,
            format!(
                "{}: {} in {from} is not a valid {}: {e}",
                desc.digest(),
                desc.media_type(),
                desc.media_type()
            ),
        )
        .with_digest(desc.digest().to_string())
    })
}

fn annotations_of(a: &Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    a.iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn platform_text(p: &oci_spec::image::Platform) -> String {
    Platform::from_oci(p).to_string()
}

impl Shape {
    /// Every config to write: the top-level one, then the members' own.
    fn configs(&self) -> Vec<Descriptor> {
        self.top_config
            .iter()
            .chain(self.members.iter().filter_map(|m| match m {
                Member::Built(b) => b.config.as_ref(),
                Member::Image { .. } => None,
            }))
            .cloned()
            .collect()
    }
}

/// The note for a root whose JSON is not the form oci-packer writes.
const NOT_CANONICAL: &str = "the root's JSON is not in the form oci-packer writes (another key order or spacing): packing gives the same content under another digest";

/// True when `data` is exactly the JSON oci-packer writes for `doc` (compact, keys sorted).
fn is_canonical(doc: &impl Serialize, data: &[u8]) -> bool {
    crate::json::canonical_json(doc).is_ok_and(|c| c == data)
}

/// Reads the root and decides what every part becomes.
async fn shape(store: &dyn Target, root: &Descriptor) -> Result<Shape> {
    let from = store.name();
    let mt = root.media_type().to_string();
    let data = fetch_small(store, root).await?;
    let mut notes = Vec::new();
    if !mediatype::is_index(&mt) {
        if !mediatype::is_manifest(&mt) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{}: a {mt} is neither a manifest nor an index; nothing to extract",
                    root.digest()
                ),
            ));
        }
        let m: ImageManifest = parse(&data, root, &from)?;
        if !is_canonical(&m, &data) {
            notes.push(NOT_CANONICAL.into());
        }
        if mt != mediatype::OCI_MANIFEST {
            notes.push(format!(
                "the root is a {mt}; packing gives an OCI image manifest"
            ));
        }
        if m.subject().is_some() {
            notes.push("the root has a subject, which a pack file cannot give".into());
        }
        let config = (!is_empty_config(m.config())).then(|| m.config().clone());
        let artifact_type = m
            .artifact_type()
            .as_ref()
            .map(|t| t.to_string())
            .filter(|t| !(t == UNKNOWN_ARTIFACT && config.is_none()));
        return Ok(Shape {
            artifact_type,
            annotations: annotations_of(m.annotations()),
            top_config: config,
            members: vec![Member::Built(Built {
                platform: None,
                config: None,
                layers: m.layers().clone(),
            })],
            notes,
        });
    }
    let index: ImageIndex = parse(&data, root, &from)?;
    if !is_canonical(&index, &data) {
        notes.push(NOT_CANONICAL.into());
    }
    let artifact_type = index.artifact_type().as_ref().map(|t| t.to_string());
    let mut members = Vec::new();
    for entry in index.manifests() {
        members.push(member(store, entry, artifact_type.as_deref(), &from).await?);
    }
    // One config shared by every built member is the top-level config.
    let configs: HashSet<Option<String>> = members
        .iter()
        .filter_map(|m| match m {
            Member::Built(b) => Some(b.config.as_ref().map(|c| c.digest().to_string())),
            Member::Image { .. } => None,
        })
        .collect();
    let mut top_config = None;
    if configs.len() == 1 && configs.iter().next().is_some_and(Option::is_some) {
        for m in &mut members {
            if let Member::Built(b) = m {
                top_config = b.config.take().or(top_config);
            }
        }
    }
    Ok(Shape {
        artifact_type,
        annotations: annotations_of(index.annotations()),
        top_config,
        members,
        notes,
    })
}

/// Classifies one index entry: a manifest oci-packer built (its layers are extracted) or an
/// image member (an `oci://` item).
async fn member(
    store: &dyn Target,
    entry: &Descriptor,
    index_type: Option<&str>,
    from: &str,
) -> Result<Member> {
    let mt = entry.media_type().to_string();
    let image = |own_type: Option<String>| Member::Image {
        entry: entry.clone(),
        own_type,
    };
    if mt != mediatype::OCI_MANIFEST {
        let own_type = if mediatype::is_manifest(&mt) {
            let data = fetch_small(store, entry).await?;
            serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| v.get("artifactType")?.as_str().map(str::to_string))
        } else {
            None
        };
        return Ok(image(own_type));
    }
    let data = fetch_small(store, entry).await?;
    let m: ImageManifest = parse(&data, entry, from)?;
    let own_type = m.artifact_type().as_ref().map(|t| t.to_string());
    let config_empty = is_empty_config(m.config());
    // What assembling a built member writes, exactly.
    let expected_type = index_type
        .map(str::to_string)
        .or(config_empty.then(|| UNKNOWN_ARTIFACT.to_string()));
    let built = is_canonical(&m, &data)
        && m.annotations().as_ref().is_none_or(HashMap::is_empty)
        && m.subject().is_none()
        && !is_image_config(m.config().media_type().as_ref())
        && entry.annotations().as_ref().is_none_or(HashMap::is_empty)
        && entry.urls().as_ref().is_none_or(Vec::is_empty)
        && entry.data().is_none()
        && own_type == expected_type
        && entry.artifact_type().as_ref().map(|t| t.to_string()) == expected_type;
    if !built {
        return Ok(image(own_type));
    }
    Ok(Member::Built(Built {
        platform: entry.platform().as_ref().map(platform_text),
        config: (!config_empty).then(|| m.config().clone()),
        layers: m.layers().clone(),
    }))
}

/// How a layer is written.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    /// As a file.
    File,
    /// An archive oci-packer made: extracted into a directory when its content re-archives
    /// to the same bytes, else written as a file.
    OwnArchive(Compression),
    /// A foreign archive extracted (`--unpack`).
    Unpack(Compression),
}

/// One layer's output.
#[derive(Debug, Clone)]
struct LayerOut {
    desc: Descriptor,
    /// Its path below OUTDIR (`/`-separated, clean).
    path: String,
    write: Write,
    /// After writing: the directory an own archive became (below OUTDIR), and its format.
    archive_dir: Option<(String, &'static str)>,
}

/// Checks a title (or a directory annotation) as a relative path below OUTDIR and cleans it.
fn safe_path(text: &str, desc: &Descriptor, what: &str) -> Result<String> {
    let refuse = |why: &str| {
        Err(Error::new(
            ErrorKind::UnsafeContent,
            format!(
                "layer {}: {what} \"{}\" {why}; nothing was written",
                desc.digest(),
                crate::text::printable(text)
            ),
        )
        .with_digest(desc.digest().to_string()))
    };
    if text.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if text.starts_with('/') {
        return refuse("is an absolute path");
    }
    if text.split(['/', '\\']).any(|p| p == "..") {
        return refuse("climbs out of the output directory with ..");
    }
    let clean = crate::source::clean_path(text);
    if clean == "." || clean.is_empty() {
        return refuse("names no file");
    }
    Ok(clean)
}

fn hex12(d: &Descriptor) -> String {
    let digest = d.digest().to_string();
    let hex = digest.split_once(':').map_or(digest.as_str(), |(_, h)| h);
    hex.chars().take(12).collect()
}

/// Where each output lands: files and whole directories, checked for collisions.
#[derive(Debug, Default)]
struct Claims {
    /// Path → (digest, is a whole directory).
    paths: BTreeMap<String, (String, bool)>,
}

impl Claims {
    fn taken(&self, path: &str) -> bool {
        self.conflict(path, "", false).is_some()
    }

    /// The claimed path that `path` collides with: the same path with other content, a
    /// parent that is a file (or a directory output), or a child of a file.
    fn conflict(&self, path: &str, digest: &str, dir: bool) -> Option<String> {
        if let Some((d, _)) = self.paths.get(path) {
            return (d != digest || dir || digest.is_empty()).then(|| path.to_string());
        }
        let mut prefix = String::new();
        for part in path.split('/') {
            if self.paths.contains_key(&prefix) {
                return Some(prefix);
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
        }
        let below = format!("{path}/");
        self.paths
            .range(below.clone()..)
            .next()
            .filter(|(p, _)| p.starts_with(&below))
            .map(|(p, _)| p.clone())
    }

    fn claim(&mut self, path: &str, desc: &Descriptor, dir: bool) -> Result<()> {
        let digest = desc.digest().to_string();
        if let Some(other) = self.conflict(path, &digest, dir) {
            return Err(Error::new(
                ErrorKind::UnsafeContent,
                format!(
                    "layer {digest} would be written to \"{}\", which collides with \"{}\" of another layer; nothing was written",
                    crate::text::printable(path),
                    crate::text::printable(&other)
                ),
            )
            .with_digest(digest));
        }
        self.paths.insert(path.to_string(), (digest, dir));
        Ok(())
    }

    /// Paths claimed at or below `dir` (`.`: everything).
    fn below<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.paths
            .keys()
            .filter(move |p| dir == "." || p.as_str() == dir || p.starts_with(&format!("{dir}/")))
    }
}

/// A file name for `name` that no claim collides with (`name`, then `stem-2.ext`, …).
fn free_name(claims: &Claims, name: &str) -> String {
    if !claims.taken(name) {
        return name.to_string();
    }
    let (stem, ext) = name.rsplit_once('.').map_or((name, ""), |(s, e)| (s, e));
    (2..)
        .map(|i| match ext {
            "" => format!("{stem}-{i}"),
            e => format!("{stem}-{i}.{e}"),
        })
        .find(|n| !claims.taken(n))
        .expect("a free name")
}

/// `$` written literally in a pack file (`${VAR}` would be expanded).
fn lit(s: &str) -> String {
    s.replace('$', "$$")
}

/// Annotations for a pack file: values with `$` doubled (keys are never expanded).
fn lit_map(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), lit(v))).collect()
}

fn archive_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "tar",
        Compression::Gzip => "tar+gzip",
        Compression::Zstd => "tar+zstd",
    }
}

fn archive_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => mediatype::LAYER_TAR,
        Compression::Gzip => mediatype::LAYER_TAR_GZIP,
        Compression::Zstd => mediatype::LAYER_TAR_ZSTD,
    }
}

/// The path of a layer, before writing; `unpack` strips an archive extension.
fn layer_path(desc: &Descriptor, unpack_dir: bool) -> Result<String> {
    let a = annotations_of(desc.annotations());
    let mut path = match a.get(TITLE) {
        Some(title) => {
            let title = safe_path(title, desc, "title")?;
            match a.get(DIR_ANNOTATION) {
                Some(dir) => {
                    let dir = safe_path(dir, desc, "directory annotation").or_else(|e| {
                        if dir == "." || dir == "./" {
                            Ok(".".into())
                        } else {
                            Err(e)
                        }
                    })?;
                    if dir == "." {
                        title
                    } else {
                        format!("{dir}/{title}")
                    }
                }
                None => title,
            }
        }
        None => hex12(desc),
    };
    if unpack_dir {
        for ext in [".tar.gz", ".tar.zst", ".tgz", ".tzst", ".tar"] {
            if let Some(stem) = path
                .strip_suffix(ext)
                .filter(|s| !s.is_empty() && !s.ends_with('/'))
            {
                path = stem.to_string();
                break;
            }
        }
    }
    Ok(path)
}

/// A directory name for a member's files: its platform (`linux-arm64-v8`), else `all`.
fn member_dir(b: &Built) -> String {
    match &b.platform {
        Some(p) => p
            .chars()
            .map(|c| match c {
                '/' | '(' | '+' => '-',
                ')' => '\0',
                c => c,
            })
            .filter(|&c| c != '\0')
            .collect::<String>()
            .replace("--", "-"),
        None => "all".into(),
    }
}

/// Decides how each layer is written and claims its path. Members of an index whose files
/// would collide (the same title for two platforms) each get a directory of their own.
fn plan_layers(
    shape: &Shape,
    options: &Options,
    claims: &mut Claims,
) -> Result<Vec<Vec<LayerOut>>> {
    let built = shape
        .members
        .iter()
        .filter(|m| matches!(m, Member::Built(_)))
        .count();
    let mut trial = Claims::default();
    match plan_layers_in(shape, options, &mut trial, false) {
        Err(e)
            if built > 1
                && e.kind() == ErrorKind::UnsafeContent
                && e.message().contains("collides") =>
        {
            plan_layers_in(shape, options, claims, true)
        }
        Err(e) => Err(e),
        Ok(out) => {
            *claims = trial;
            Ok(out)
        }
    }
}

fn plan_layers_in(
    shape: &Shape,
    options: &Options,
    claims: &mut Claims,
    per_member: bool,
) -> Result<Vec<Vec<LayerOut>>> {
    let mut out = Vec::new();
    let mut dirs_used: HashSet<String> = HashSet::new();
    for m in &shape.members {
        let Member::Built(b) = m else {
            out.push(Vec::new());
            continue;
        };
        let prefix = per_member.then(|| {
            let base = member_dir(b);
            let mut name = base.clone();
            let mut n = 2;
            while !dirs_used.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        });
        let mut layers = Vec::new();
        for desc in &b.layers {
            let mt = desc.media_type().to_string();
            let a = annotations_of(desc.annotations());
            let tar_type = Compression::of_media_type(&mt);
            let write = if a.contains_key(ORAS_DIGEST) && !a.contains_key(DIR_ANNOTATION) {
                Write::OwnArchive(tar_type.unwrap_or(Compression::None))
            } else if let (true, Some(c)) = (options.unpack, tar_type) {
                Write::Unpack(c)
            } else {
                Write::File
            };
            let mut path = layer_path(desc, matches!(write, Write::Unpack(_)))?;
            if let Some(p) = &prefix {
                path = format!("{p}/{path}");
            }
            claims.claim(&path, desc, write != Write::File)?;
            layers.push(LayerOut {
                desc: desc.clone(),
                path,
                write,
                archive_dir: None,
            });
        }
        out.push(layers);
    }
    Ok(out)
}

/// A blocking reader of `blob`, stopping one byte past its declared size. Runs on a
/// blocking thread of the runtime (a registry stream is bridged).
fn blob_reader(blob: Blob, desc: &Descriptor, from: &str) -> Result<Box<dyn Read + Send>> {
    let limit = desc.size() + 1;
    Ok(match blob {
        Blob::Bytes(b) => Box::new(std::io::Cursor::new(b)),
        Blob::Stream(r) => Box::new(tokio_util::io::SyncIoBridge::new(r).take(limit)),
        blob @ (Blob::File(_) | Blob::Spooled(..)) => {
            let file = blob.into_file_ref().expect("a file");
            Box::new(crate::store::verify::open_blob_file(&file, desc, from)?.take(limit))
        }
    })
}

/// A failed read of `desc` from `from` (a registry download cut short, a file that changed).
fn read_error(e: std::io::Error, desc: &Descriptor, from: &str) -> Error {
    crate::error::from_read_error(e, |e| {
        Error::new(
            ErrorKind::Network,
            format!("reading {} from {from}: {e}; try again", desc.digest()),
        )
        .with_digest(desc.digest().to_string())
    })
}

/// Reads the rest of `raw` and checks it is exactly `desc`.
fn finish_raw<R: Read>(mut raw: HashingReader<R>, desc: &Descriptor, from: &str) -> Result<u64> {
    std::io::copy(&mut raw, &mut std::io::sink()).map_err(|e| read_error(e, desc, from))?;
    let (digest, size) = raw.finish();
    crate::store::verify::check(desc, from, &digest, size)?;
    Ok(size)
}

/// Writes a blob as the file `path` below `at` (mode 0644), verified.
fn write_file(
    at: &mut Beneath<'_>,
    reader: Box<dyn Read + Send>,
    desc: &Descriptor,
    from: &str,
    path: &str,
) -> Result<u64> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let mut file = at.create_file(path)?;
    let mut raw = HashingReader::new(reader);
    let mut buf = vec![0u8; crate::digest::COPY_BUFFER];
    loop {
        // A failed read is the source's (a download cut short), a failed write the disk's.
        let n = raw.read(&mut buf).map_err(|e| read_error(e, desc, from))?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|e| Error::new(ErrorKind::Io, format!("writing {path}: {e}")))?;
        crate::fsutil::check_stopped().map_err(|e| {
            crate::error::from_read_error(e, |e| Error::new(ErrorKind::Io, e.to_string()))
        })?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::new(ErrorKind::Io, format!("writing {path}: {e}")))?;
    finish_raw(raw, desc, from)
}

/// Extracts an archive layer into the new directory `dir` (an absolute path inside the temp
/// directory); returns what the extraction saw and the bytes read.
fn unpack_layer(
    reader: Box<dyn Read + Send>,
    desc: &Descriptor,
    from: &str,
    compression: Option<Compression>,
    dir: &Path,
    options: UnpackOptions,
) -> Result<Option<(unpack::Unpacked, u64, Compression)>> {
    let mut raw = HashingReader::new(reader);
    let unpacked = {
        let mut head = [0u8; 4];
        let mut got = 0;
        while got < head.len() {
            match raw.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => {
                    return Err(crate::error::from_read_error(e, |e| {
                        Error::new(
                            ErrorKind::Network,
                            format!("reading {}: {e}", desc.digest()),
                        )
                    }))
                }
            }
        }
        let compression = compression.unwrap_or_else(|| Compression::sniff(&head[..got]));
        let chained = std::io::Cursor::new(head[..got].to_vec()).chain(&mut raw);
        let tar = compression.decoder(chained).map_err(|e| {
            Error::new(
                ErrorKind::UnsafeContent,
                format!("layer {}: {e}", desc.digest()),
            )
        })?;
        // A layer typed as tar that is no tar at all (ORAS types every file it pushes so)
        // is a file, not a broken archive.
        let Some(mut tar) = unpack::tar_stream(tar, dir)
            .map_err(|e| e.context(format!("layer {}", desc.digest())))?
        else {
            return Ok(None);
        };
        std::fs::create_dir(dir).map_err(|e| Error::io("creating", dir, e))?;
        let done = unpack::unpack_into(&mut tar, dir, options).map_err(|e| {
            let e = e.context(format!("layer {}", desc.digest()));
            match e.digest() {
                Some(_) => e,
                None => e.with_digest(desc.digest().to_string()),
            }
        })?;
        (done, compression)
    };
    let (unpacked, compression) = unpacked;
    let size = finish_raw(raw, desc, from)?;
    Ok(Some((unpacked, size, compression)))
}

/// True when the directory `base` (the only entry of an extracted archive) archives again
/// to exactly `tar_digest` with oci-packer's deterministic tar.
fn rearchives_to(base_dir: &Path, base: &str, tar_digest: &Digest) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(base_dir) else {
        return false;
    };
    let Ok(mtime) = u64::try_from(meta.mtime()) else {
        return false;
    };
    let Ok(entries) = crate::source::dir::walk(base_dir, "extract", true) else {
        return false;
    };
    let sink = crate::digest::HashingWriter::new(std::io::sink());
    match crate::archive::write_tar(sink, &entries, base, mtime, &mut |_| {}) {
        Ok(w) => {
            let (_, digest, _) = w.finish();
            digest == *tar_digest
        }
        Err(_) => false,
    }
}

/// What writing produced.
#[derive(Debug, Default)]
struct Written {
    files: usize,
    bytes: u64,
    /// The common mtime of the entries of oci-packer's archives (their `SOURCE_DATE_EPOCH`).
    archive_mtime: Option<u64>,
    /// Image members: digest → the `from` of their item.
    images: BTreeMap<String, String>,
}

/// The `from` of an image item for `digest` in `store`.
fn image_source(store: &dyn Target, digest: &str) -> String {
    match store.location() {
        crate::store::Location::Layout(dir) => format!("oci://{}@{digest}", dir.display()),
        crate::store::Location::Repository(repo) => format!("oci://{repo}@{digest}"),
        crate::store::Location::Other(name) => format!("oci://{name}@{digest}"),
    }
}

/// OUTDIR must be missing or empty, unless `force`.
fn check_out_dir(out_dir: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(out_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("looking at", out_dir, e)),
        Ok(m) if m.file_type().is_symlink() => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{} is a symlink; give the directory itself",
                out_dir.display()
            ),
        )
        .with_path(out_dir)),
        Ok(m) if !m.is_dir() => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{} is not a directory", out_dir.display()),
        )
        .with_path(out_dir)),
        Ok(_) => {
            let mut rd =
                std::fs::read_dir(out_dir).map_err(|e| Error::io("reading", out_dir, e))?;
            if force || rd.next().is_none() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{} is not empty; extract into a new directory, or add --force to overwrite the files extract writes there",
                        out_dir.display()
                    ),
                )
                .with_path(out_dir))
            }
        }
    }
}

/// What became of a layer whose annotations say oci-packer archived a directory.
enum OwnArchive {
    /// Extracted to `dir` (relative to OUTDIR), which archives again to the very layer.
    Dir {
        dir: String,
        mtime: u64,
        bytes: u64,
        compression: Compression,
    },
    /// A tar archive, but not one that packing its directory would give again (compressed
    /// as found).
    Other(Compression),
    /// Not a tar archive after all: written as a file.
    NotTar,
}

/// A layer that oci-packer archived, as its descriptor says.
struct OwnLayer<'a> {
    desc: &'a Descriptor,
    from: &'a str,
    compression: Compression,
    /// The tar digest its annotations record.
    expected_tar: Option<&'a str>,
}

impl OwnLayer<'_> {
    /// Extracts the archive into a scratch directory in `temp` and moves its one directory
    /// to `path` (or below it, when the names differ) — only when that directory archives
    /// again to the recorded tar digest; otherwise nothing stays.
    fn extract(
        &self,
        reader: Box<dyn std::io::Read + Send>,
        temp: &Path,
        path: &str,
        options: UnpackOptions,
    ) -> Result<OwnArchive> {
        let scratch = temp.join(format!(
            "{}x-{}",
            crate::fsutil::TEMP_PREFIX,
            hex12(self.desc)
        ));
        let known =
            Compression::of_media_type(self.desc.media_type().as_ref()).map(|_| self.compression);
        let Some((u, bytes, found)) =
            unpack_layer(reader, self.desc, self.from, known, &scratch, options)?
        else {
            let _ = unpack::remove_tree(&scratch);
            return Ok(OwnArchive::NotTar);
        };
        let names: Vec<String> = std::fs::read_dir(&scratch)
            .map_err(|e| Error::io("reading", &scratch, e))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let single = match names.as_slice() {
            [base] if scratch.join(base).is_dir() => Some(base.clone()),
            _ => None,
        };
        let reproducible = single.as_ref().is_some_and(|base| {
            u.tar_digest.as_ref().is_some_and(|t| {
                self.expected_tar == Some(t.as_str()) && rearchives_to(&scratch.join(base), base, t)
            })
        });
        let Some(base) = single.filter(|_| reproducible) else {
            let _ = unpack::remove_tree(&scratch);
            return Ok(OwnArchive::Other(found));
        };
        let mtime = {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(scratch.join(&base))
                .map(|m| m.mtime().max(0) as u64)
                .unwrap_or(0)
        };
        // The directory lands at the title when the names agree, else below it.
        let last = path.rsplit('/').next().unwrap_or(path);
        let parts: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
        Beneath::open(temp)?
            .with_dir_mode(0o755)
            .dir(&parts[..parts.len() - 1], path.as_bytes())?;
        let (moved, dir) = if last == base {
            (scratch.join(&base), path.to_string())
        } else {
            (scratch.clone(), format!("{path}/{base}"))
        };
        std::fs::rename(&moved, temp.join(path)).map_err(|e| Error::io("moving", &moved, e))?;
        let _ = unpack::remove_tree(&scratch);
        Ok(OwnArchive::Dir {
            dir,
            mtime,
            bytes,
            compression: found,
        })
    }
}

/// Fetches and writes every layer, config and image member into `temp`.
#[allow(clippy::too_many_arguments)]
async fn write_all(
    store: &dyn Target,
    from: &str,
    temp: &Path,
    shape: &mut Shape,
    layers: &mut [Vec<LayerOut>],
    config_names: &BTreeMap<String, String>,
    images_dir: Option<&str>,
    options: &Options,
) -> Result<Written> {
    let mut written = Written::default();
    let unpack_options = UnpackOptions {
        limits: options.into(),
        whiteouts: Whiteouts::AsFiles,
        ..UnpackOptions::default()
    };
    // oci-packer's own archives are recognised by their tar digest.
    let hashing_tar = UnpackOptions {
        hash_tar: true,
        ..unpack_options
    };
    let mut done: HashSet<String> = HashSet::new();
    let mut archive_dirs: HashMap<String, (String, &'static str)> = HashMap::new();
    for layer in layers.iter_mut().flatten() {
        if !done.insert(layer.path.clone()) {
            layer.archive_dir = archive_dirs.get(&layer.path).cloned();
            continue;
        }
        let desc = layer.desc.clone();
        let (temp, from_name, path) = (temp.to_path_buf(), from.to_string(), layer.path.clone());
        match layer.write {
            Write::File => written.bytes += write_layer_file(store, from, &temp, layer).await?,
            Write::Unpack(c) => {
                match unpack_foreign(store, &from_name, &temp, layer, Some(c), unpack_options)
                    .await?
                {
                    Some(n) => {
                        written.bytes += n;
                        shape.notes.push(unpacked_note(layer));
                    }
                    None => {
                        written.bytes += write_layer_file(store, from, &temp, layer).await?;
                        layer.write = Write::File;
                    }
                }
            }
            Write::OwnArchive(c) => {
                let blob = store.fetch(&desc).await?;
                let expected_tar = annotations_of(desc.annotations()).get(ORAS_DIGEST).cloned();
                let temp2 = temp.clone();
                let outcome = blocking(move || {
                    let reader = blob_reader(blob, &desc, &from_name)?;
                    let made = OwnLayer {
                        desc: &desc,
                        from: &from_name,
                        compression: c,
                        expected_tar: expected_tar.as_deref(),
                    };
                    made.extract(reader, &temp2, &path, hashing_tar)
                })
                .await?;
                match outcome {
                    OwnArchive::Dir {
                        dir,
                        mtime,
                        bytes,
                        compression,
                    } => {
                        written.bytes += bytes;
                        // The newest: all are the same for what oci-packer made.
                        written.archive_mtime = Some(written.archive_mtime.unwrap_or(0).max(mtime));
                        layer.archive_dir = Some((dir, archive_name(compression)));
                        archive_dirs
                            .insert(layer.path.clone(), layer.archive_dir.clone().expect("set"));
                    }
                    OwnArchive::Other(found) if options.unpack => {
                        match unpack_foreign(store, from, &temp, layer, Some(found), unpack_options)
                            .await?
                        {
                            Some(n) => {
                                written.bytes += n;
                                layer.write = Write::Unpack(found);
                                shape.notes.push(unpacked_note(layer));
                            }
                            None => {
                                written.bytes +=
                                    write_layer_file(store, from, &temp, layer).await?;
                                layer.write = Write::File;
                            }
                        }
                    }
                    other => {
                        if let OwnArchive::NotTar = other {
                            tracing::warn!(
                                digest = %layer.desc.digest(),
                                "written as a file: not a tar archive"
                            );
                        }
                        // Written as the archive file itself.
                        written.bytes += write_layer_file(store, from, &temp, layer).await?;
                        layer.write = Write::File;
                    }
                }
            }
        }
        written.files += 1;
    }
    // Configs.
    let configs = shape.configs();
    let mut seen = HashSet::new();
    for c in configs {
        let digest = c.digest().to_string();
        if !seen.insert(digest.clone()) {
            continue;
        }
        let path = config_names.get(&digest).cloned().expect("named");
        let blob = store.fetch(&c).await?;
        let (temp, from_name) = (temp.to_path_buf(), from.to_string());
        written.bytes += blocking(move || {
            let reader = blob_reader(blob, &c, &from_name)?;
            write_file(&mut Beneath::open(&temp)?, reader, &c, &from_name, &path)
        })
        .await?;
        written.files += 1;
    }
    // Image members.
    for m in &shape.members {
        let Member::Image { entry, .. } = m else {
            continue;
        };
        let digest = entry.digest().to_string();
        let source = match images_dir {
            Some(dir) => {
                let layout = crate::store::layout::Layout::open(&temp.join(dir), false)?;
                let root = Descriptor::new(
                    entry.media_type().clone(),
                    entry.size(),
                    entry.digest().clone(),
                );
                crate::engine::copy_graph(
                    store,
                    &layout,
                    &root,
                    options.concurrency,
                    &options.progress,
                    None,
                )
                .await
                .map_err(|e| e.context(format!("copying image member {digest}")))?;
                layout.tag(&root, &hex12(entry), None).await?;
                format!("oci://./{dir}@{digest}")
            }
            None => image_source(store, &digest),
        };
        written.images.insert(digest, source);
    }
    Ok(written)
}

/// Fetches a layer and writes it as the file at its path.
async fn write_layer_file(
    store: &dyn Target,
    from: &str,
    temp: &Path,
    layer: &LayerOut,
) -> Result<u64> {
    let blob = store.fetch(&layer.desc).await?;
    let (desc, from, path, temp) = (
        layer.desc.clone(),
        from.to_string(),
        layer.path.clone(),
        temp.to_path_buf(),
    );
    blocking(move || {
        let reader = blob_reader(blob, &desc, &from)?;
        write_file(
            &mut Beneath::open(&temp)?.with_dir_mode(0o755),
            reader,
            &desc,
            &from,
            &path,
        )
    })
    .await
}

fn unpacked_note(layer: &LayerOut) -> String {
    format!(
        "layer {} was unpacked into {}/: packing that directory makes a different layer \
         (a new archive of it, its entries under {}/, with other owners and times)",
        layer.desc.digest(),
        layer.path,
        layer.path.rsplit('/').next().unwrap_or(&layer.path)
    )
}

/// Extracts a foreign archive layer into the directory at its path; an archive whose only
/// entry is a directory of that same name (what `oras push DIR` makes) lands at the path
/// itself, as `oras pull` puts it. `None` when the layer is no tar archive after all.
async fn unpack_foreign(
    store: &dyn Target,
    from: &str,
    temp: &Path,
    layer: &LayerOut,
    compression: Option<Compression>,
    options: UnpackOptions,
) -> Result<Option<u64>> {
    let blob = store.fetch(&layer.desc).await?;
    let (desc, from, temp, path) = (
        layer.desc.clone(),
        from.to_string(),
        temp.to_path_buf(),
        layer.path.clone(),
    );
    let done = blocking(move || {
        let reader = blob_reader(blob, &desc, &from)?;
        let parts: Vec<&[u8]> = path.split('/').map(str::as_bytes).collect();
        Beneath::open(&temp)?
            .with_dir_mode(0o755)
            .dir(&parts[..parts.len() - 1], path.as_bytes())?;
        let target = temp.join(&path);
        let Some((u, n, _)) = unpack_layer(reader, &desc, &from, compression, &target, options)?
        else {
            let _ = unpack::remove_tree(&target);
            return Ok(None);
        };
        let last = path.rsplit('/').next().unwrap_or(&path);
        let names: Vec<std::ffi::OsString> = std::fs::read_dir(&target)
            .map_err(|e| Error::io("reading", &target, e))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if let [only] = names.as_slice() {
            let inner = target.join(only);
            if only.as_os_str() == std::ffi::OsStr::new(last)
                && std::fs::symlink_metadata(&inner).is_ok_and(|m| m.is_dir())
            {
                let hoisted =
                    temp.join(format!("{}h-{}", crate::fsutil::TEMP_PREFIX, hex12(&desc)));
                std::fs::rename(&inner, &hoisted).map_err(|e| Error::io("moving", &inner, e))?;
                std::fs::remove_dir(&target).map_err(|e| Error::io("moving", &target, e))?;
                std::fs::rename(&hoisted, &target).map_err(|e| Error::io("moving", &hoisted, e))?;
            }
        }
        Ok(Some((u, n)))
    })
    .await?;
    match done {
        Some((u, n)) => {
            warn_devices(&u, &layer.desc);
            Ok(Some(n))
        }
        None => Ok(None),
    }
}

fn warn_devices(u: &unpack::Unpacked, desc: &Descriptor) {
    if u.skipped_devices > 0 {
        tracing::warn!(
            digest = %desc.digest(),
            "{} device nodes not created: only root can (run as root to keep them)",
            u.skipped_devices
        );
    }
}

/// The annotations of `d` without `drop` keys whose value is `unless_not`'s (for titles: only
/// when the title is the one the source adds by itself).
fn extra_fields_note(d: &Descriptor, notes: &mut Vec<String>) {
    if d.artifact_type().is_some()
        || d.platform().is_some()
        || d.urls().as_ref().is_some_and(|u| !u.is_empty())
        || d.data().is_some()
    {
        notes.push(format!(
            "layer {} has descriptor fields (artifactType, platform, urls or data) a pack file cannot give",
            d.digest()
        ));
    }
}

fn config_spec(c: &Descriptor, config_names: &BTreeMap<String, String>) -> ConfigSpec {
    let name = config_names
        .get(&c.digest().to_string())
        .cloned()
        .unwrap_or_default();
    let mt = c.media_type().to_string();
    ConfigSpec {
        from: format!("file://{}", lit(&name)),
        media_type: (mt != mediatype::infer(&name)).then(|| lit(&mt)),
        annotations: lit_map(&annotations_of(c.annotations())),
        digest: None,
    }
}

/// The item that gives back one layer written as a file.
fn file_item(l: &LayerOut, platform: Option<&String>, notes: &mut Vec<String>) -> ItemSpec {
    let mut a = annotations_of(l.desc.annotations());
    let base = l.path.rsplit('/').next().unwrap_or(&l.path);
    match a.get(TITLE) {
        Some(t) if t == base => {
            a.remove(TITLE);
        }
        Some(_) => {}
        None => notes.push(format!(
            "layer {} has no title; packing its file adds one (its digest as the title)",
            l.desc.digest()
        )),
    }
    extra_fields_note(&l.desc, notes);
    let mt = l.desc.media_type().to_string();
    ItemSpec {
        from: format!("file://{}", lit(&l.path)),
        media_type: (mt != mediatype::infer(&l.path)).then(|| lit(&mt)),
        platform: platform.map(|p| lit(p)),
        annotations: lit_map(&a),
        ..Default::default()
    }
}

/// The item that gives back an archive layer from the directory it was extracted to.
fn archive_item(
    l: &LayerOut,
    dir: &str,
    format: &str,
    platform: Option<&String>,
    notes: &mut Vec<String>,
) -> ItemSpec {
    let mut a = annotations_of(l.desc.annotations());
    let base = dir.rsplit('/').next().unwrap_or(dir);
    if a.get(TITLE).is_some_and(|t| t == base) {
        a.remove(TITLE);
    }
    a.remove(ORAS_DIGEST);
    if format == "tar+gzip" {
        a.remove(ORAS_UNPACK);
    }
    extra_fields_note(&l.desc, notes);
    let mt = l.desc.media_type().to_string();
    let default_type = archive_media_type(match format {
        "tar+gzip" => Compression::Gzip,
        "tar+zstd" => Compression::Zstd,
        _ => Compression::None,
    });
    ItemSpec {
        from: format!("dir://{}/", lit(dir)),
        media_type: (mt != default_type).then(|| lit(&mt)),
        platform: platform.map(|p| lit(p)),
        annotations: lit_map(&a),
        archive: Some(format.to_string()),
        ..Default::default()
    }
}

/// A run of per-file layers of one `dir://` item: same directory, same other annotations,
/// titles in byte order.
fn dir_runs(layers: &[LayerOut]) -> Vec<std::ops::Range<usize>> {
    let key = |l: &LayerOut| -> Option<(String, BTreeMap<String, String>, String)> {
        if l.write != Write::File || l.desc.artifact_type().is_some() || l.desc.platform().is_some()
        {
            return None;
        }
        let mut a = annotations_of(l.desc.annotations());
        let dir = a.remove(DIR_ANNOTATION)?;
        let title = a.remove(TITLE)?;
        Some((dir, a, title))
    };
    let mut runs = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let Some((dir, extra, mut last)) = key(&layers[i]) else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while let Some((d, e, t)) = layers.get(j).and_then(key) {
            if d != dir || e != extra || t.as_bytes() <= last.as_bytes() {
                break;
            }
            last = t;
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    runs
}

/// The `dir://` item for a run, when packing its directory gives exactly these layers.
fn dir_item(run: &[LayerOut], claims: &Claims, platform: Option<&String>) -> Option<ItemSpec> {
    let first = annotations_of(run[0].desc.annotations());
    let written = first.get(DIR_ANNOTATION)?;
    let dir = crate::source::clean_path(written);
    if dir == "." || dir.starts_with("..") || dir.starts_with('/') {
        return None;
    }
    let mut paths: Vec<&String> = Vec::new();
    for l in run {
        let title = annotations_of(l.desc.annotations()).get(TITLE)?.clone();
        if crate::source::clean_path(&title) != title || l.path != format!("{dir}/{title}") {
            return None;
        }
        paths.push(&l.path);
    }
    // The directory holds exactly these files: packing it reads nothing else.
    let below: Vec<&String> = claims.below(&dir).collect();
    if below.len() != paths.len() || below.iter().any(|p| !paths.contains(p)) {
        return None;
    }
    let inferred = run
        .iter()
        .all(|l| l.desc.media_type().to_string() == mediatype::infer(&l.path));
    let media_type = if inferred {
        None
    } else {
        let mt = run[0].desc.media_type().to_string();
        if !run.iter().all(|l| l.desc.media_type().to_string() == mt) {
            return None;
        }
        Some(lit(&mt))
    };
    let mut extra = first.clone();
    extra.remove(TITLE);
    extra.remove(DIR_ANNOTATION);
    Some(ItemSpec {
        from: format!("dir://{}/", lit(&dir)),
        media_type,
        platform: platform.map(|p| lit(p)),
        annotations: lit_map(&extra),
        ..Default::default()
    })
}

/// The pack file that builds the artifact again, and `SOURCE_DATE_EPOCH` for it.
fn pack_file(
    shape: &Shape,
    layers: &[Vec<LayerOut>],
    config_names: &BTreeMap<String, String>,
    claims: &Claims,
    written: &Written,
    notes: &mut Vec<String>,
) -> (PackFile, Option<u64>) {
    let mut pack = PackFile {
        artifact_type: shape.artifact_type.as_deref().map(lit),
        annotations: BTreeMap::new(),
        config: shape
            .top_config
            .as_ref()
            .map(|c| config_spec(c, config_names)),
        items: Vec::new(),
    };
    let mut annotations = shape.annotations.clone();
    let created = annotations.remove(CREATED);
    let epoch = match (written.archive_mtime, created.as_deref()) {
        // Archives made without SOURCE_DATE_EPOCH (mtime 0), a time given with --created:
        // the time stays an annotation, so that the archives stay at 0.
        (Some(0), Some(c)) => {
            annotations.insert(CREATED.to_string(), c.to_string());
            notes.push(format!(
                "the root's creation time {c} is kept as an annotation: pack without \
                 SOURCE_DATE_EPOCH and --created, which would replace it"
            ));
            None
        }
        (Some(0), None) => None,
        (Some(m), Some(c)) if crate::time::rfc3339(m) != c => {
            notes.push(format!(
                "the root was created at {c} but its archives at {}; packing sets both to the time of SOURCE_DATE_EPOCH",
                crate::time::rfc3339(m)
            ));
            Some(m)
        }
        (Some(m), _) => Some(m),
        (None, Some(c)) => match crate::time::parse_rfc3339(c) {
            Some(e) => Some(e),
            None => {
                annotations.insert(CREATED.to_string(), c.to_string());
                notes.push(format!(
                    "the root's creation time {c} is kept as an annotation: pack without \
                     SOURCE_DATE_EPOCH and --created, which would replace it"
                ));
                None
            }
        },
        (None, None) => None,
    };
    pack.annotations = lit_map(&annotations);
    for (m, outs) in shape.members.iter().zip(layers) {
        match m {
            Member::Built(b) => {
                let first_item = pack.items.len();
                let platform = b.platform.as_ref();
                if let Some(p) = platform {
                    let parsed = Platform::parse(p).map(|p| p.normalized().to_string());
                    if parsed.as_deref() != Ok(p.as_str()) {
                        notes.push(format!(
                            "platform {p} is not in normalised form; packing normalises it"
                        ));
                    }
                }
                let runs = dir_runs(outs);
                let mut i = 0;
                while i < outs.len() {
                    if let Some(run) = runs.iter().find(|r| r.start == i) {
                        if let Some(item) = dir_item(&outs[run.clone()], claims, platform) {
                            pack.items.push(item);
                            i = run.end;
                            continue;
                        }
                    }
                    let l = &outs[i];
                    pack.items.push(match &l.archive_dir {
                        Some((dir, format)) => archive_item(l, dir, format, platform, notes),
                        None => match l.write {
                            Write::Unpack(c) => {
                                archive_item(l, &l.path, archive_name(c), platform, notes)
                            }
                            _ => file_item(l, platform, notes),
                        },
                    });
                    i += 1;
                }
                if pack.items.len() == first_item {
                    notes.push("a member without layers cannot be packed again".into());
                    continue;
                }
                if let Some(c) = &b.config {
                    pack.items[first_item].config = Some(config_spec(c, config_names));
                }
            }
            Member::Image { entry, own_type } => {
                let digest = entry.digest().to_string();
                let entry_type = entry.artifact_type().as_ref().map(|t| t.to_string());
                if entry_type.is_none() && own_type.is_some() {
                    notes.push(format!("member {digest} has no artifactType in the index but its manifest has one; packing copies it"));
                }
                let platform = entry.platform().as_ref().map(|p| {
                    if Platform::from_oci(p).normalized().to_oci() != *p {
                        notes.push(format!("member {digest}: its platform is not in normalised form; packing normalises it"));
                    }
                    platform_text(p)
                });
                pack.items.push(ItemSpec {
                    from: lit(written.images.get(&digest).map_or("", String::as_str)),
                    media_type: entry_type
                        .filter(|t| Some(t) != own_type.as_ref())
                        .map(|t| lit(&t)),
                    platform: platform.map(|p| lit(&p)),
                    annotations: lit_map(&annotations_of(entry.annotations())),
                    ..Default::default()
                });
            }
        }
    }
    (pack, epoch)
}

/// The registry flags packing needs for image items in registries: those given here.
fn pack_flags<'a>(options: &Options, sources: impl Iterator<Item = &'a String>) -> String {
    let from_registry = sources
        .into_iter()
        .any(|s| matches!(Reference::parse(s), Ok(Reference::Registry(_))));
    let mut flags = String::new();
    if from_registry && options.registry.plain_http {
        flags.push_str(" --plain-http");
    }
    if from_registry && options.registry.insecure {
        flags.push_str(" --insecure");
    }
    flags
}

/// `oci-packer pack -f PACK TARGET` with what it needs.
fn command(epoch: Option<u64>, flags: &str, pack: &str) -> String {
    let env = epoch.map_or(String::new(), |e| format!("SOURCE_DATE_EPOCH={e} "));
    let pack = crate::text::shell_word(pack);
    format!("{env}oci-packer{flags} pack -f {pack} TARGET")
}

/// Writes the pack file into `dir` as `name`, with a header saying where it came from and
/// how to pack it again, and checks that it reads back as a valid pack.
fn write_pack_file(
    dir: &Path,
    name: &str,
    pack: &PackFile,
    reference: &str,
    root: &Descriptor,
    command: &str,
    notes: &[String],
) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let one_line = |s: &str| crate::text::printable(s).replace('\n', " ");
    let mut text = format!(
        "# Extracted by oci-packer from {} ({}).\n",
        one_line(reference),
        root.digest()
    );
    text.push_str(&format!("# Pack it again with: {}\n", one_line(command)));
    for n in notes {
        text.push_str(&format!("# Note: {}\n", one_line(n)));
    }
    text.push_str(&crate::packfile::to_yaml(pack)?);
    let path = dir.join(name);
    let mut f = Beneath::open(dir)?.create_file(name)?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io("writing", &path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("writing", &path, e))?;
    // What was written must read back as a valid pack.
    if let Err(problems) = crate::packfile::load(&crate::packfile::PackInput::File(path))? {
        let all: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        return Err(Error::new(
            ErrorKind::Internal,
            format!("the pack file written is not valid: {}", all.join("; ")),
        ));
    }
    Ok(())
}

/// Refuses a move of `from` into `to` that would replace a directory by a file or a file
/// (or a symlink) by a directory, before anything moves.
fn check_merge(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).map_err(|e| Error::io("reading", from, e))? {
        let e = e.map_err(|e| Error::io("reading", from, e))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let Ok(there) = std::fs::symlink_metadata(&dst) else {
            continue;
        };
        let src_dir = e.file_type().is_ok_and(|t| t.is_dir());
        match (src_dir, there.is_dir()) {
            (true, true) => check_merge(&src, &dst)?,
            (false, false) => {}
            (true, false) | (false, true) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{} is a {} in OUTDIR where extract writes a {}; nothing was replaced \
                         (move it away, or extract elsewhere)",
                        dst.display(),
                        if there.is_dir() { "directory" } else { "file" },
                        if src_dir { "directory" } else { "file" },
                    ),
                )
                .with_path(&dst))
            }
        }
    }
    Ok(())
}

/// Moves everything in `from` into `to`: new names are renamed, directories merged, files
/// replaced only with `force` (checked first: a directory never replaces a file or the
/// other way round); without it a name that appeared meanwhile is an error, never replaced.
fn merge_into(from: &Path, to: &Path, force: bool) -> Result<()> {
    check_merge(from, to)?;
    move_into(from, to, force)
}

fn move_into(from: &Path, to: &Path, force: bool) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    for e in std::fs::read_dir(from).map_err(|e| Error::io("reading", from, e))? {
        let e = e.map_err(|e| Error::io("reading", from, e))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let both_dirs = e.file_type().is_ok_and(|t| t.is_dir())
            && std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir());
        if both_dirs {
            move_into(&src, &dst, force)?;
            continue;
        }
        let flags = match force {
            true => RenameFlags::empty(),
            false => RenameFlags::NOREPLACE,
        };
        renameat_with(CWD, &src, CWD, &dst, flags).map_err(|e| match e {
            rustix::io::Errno::EXIST => Error::new(
                ErrorKind::Io,
                format!(
                    "{} appeared in OUTDIR while extracting; it was not replaced (extract again \
                     into an empty directory, or with --force)",
                    dst.display()
                ),
            )
            .with_path(&dst),
            e => Error::io("moving into place", &dst, e.into()),
        })?;
    }
    Ok(())
}

/// The output directory of one extraction: OUTDIR (made when missing) and a temp directory
/// in it where everything is written first. Dropped, it removes the temp directory, and
/// OUTDIR when it made it and it is still empty — so an error or a cancellation leaves
/// nothing of its own, and never anything of anybody else's.
#[derive(Debug)]
pub(crate) struct WorkDir {
    out_dir: PathBuf,
    temp: PathBuf,
    created: bool,
}

impl WorkDir {
    /// Checks OUTDIR (missing or empty unless `force`) and makes the temp directory.
    pub(crate) fn new(out_dir: &Path, force: bool) -> Result<WorkDir> {
        check_out_dir(out_dir, force)?;
        let created = std::fs::symlink_metadata(out_dir).is_err();
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io("creating", out_dir, e))?;
        let temp = tempfile::Builder::new()
            .prefix(crate::fsutil::TEMP_PREFIX)
            .tempdir_in(out_dir)
            .map_err(|e| Error::io("creating a directory in", out_dir, e))?
            .keep();
        Ok(WorkDir {
            out_dir: out_dir.to_path_buf(),
            temp,
            created,
        })
    }

    /// Where everything is written first.
    pub(crate) fn temp(&self) -> &Path {
        &self.temp
    }

    /// The result of the extraction, its errors naming OUTDIR rather than the temp
    /// directory; cleans up.
    pub(crate) fn finish<T>(self, result: Result<T>) -> Result<T> {
        result.map_err(|e| unpack::rename_paths(e, &self.temp, &self.out_dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = unpack::remove_tree(&self.temp);
        if self.created {
            // Only when empty: someone else may have written into it meanwhile.
            let _ = std::fs::remove_dir(&self.out_dir);
        }
    }
}

/// `extract REF OUTDIR`, written into `temp` (see [`WorkDir`]) and moved into OUTDIR when
/// complete.
pub(crate) async fn extract(
    reference: &str,
    out_dir: &Path,
    temp: &Path,
    options: &Options,
) -> Result<Extracted> {
    let wanted = options.wanted_platform()?;
    let targets = Targets::new(&options.registry, false, None);
    let opened = targets.open_str(reference, false)?;
    let store = opened.target.clone();
    let mut root = opened.resolve().await?;
    if let Some(p) = &wanted {
        root = select_wanted_platform(store.as_ref(), &root, p, reference).await?;
    }
    let from = store.name();
    let mut shape = shape(store.as_ref(), &root).await?;

    // Every path is claimed before anything is written.
    let mut claims = Claims::default();
    let mut layers = plan_layers(&shape, options, &mut claims)?;
    let pack_name = free_name(&claims, "pack.yaml");
    claims
        .paths
        .insert(pack_name.clone(), (String::new(), false));
    let has_images = shape
        .members
        .iter()
        .any(|m| matches!(m, Member::Image { .. }));
    let images_dir = match options.images && has_images {
        true if claims.taken("images") => {
            return Err(Error::new(
                ErrorKind::UnsafeContent,
                "a layer is written to \"images\", where --images copies the image members; extract without --images",
            ))
        }
        true => {
            claims.paths.insert("images".into(), (String::new(), true));
            Some("images")
        }
        false => None,
    };
    let mut config_names: BTreeMap<String, String> = BTreeMap::new();
    let configs = shape.configs();
    let distinct: HashSet<String> = configs.iter().map(|c| c.digest().to_string()).collect();
    for c in &configs {
        let digest = c.digest().to_string();
        if config_names.contains_key(&digest) {
            continue;
        }
        let mt = c.media_type().to_string();
        let ext = if mt.ends_with("json") { "json" } else { "bin" };
        let name = match distinct.len() {
            1 => free_name(&claims, &format!("config.{ext}")),
            _ => free_name(&claims, &format!("config-{}.{ext}", hex12(c))),
        };
        claims.paths.insert(name.clone(), (digest.clone(), false));
        config_names.insert(digest, name);
    }

    if let crate::store::Location::Layout(dir) = store.location() {
        let (layout, out) = (dir.canonicalize().ok(), out_dir.canonicalize().ok());
        if let (Some(layout), Some(out)) = (layout, out) {
            if out.starts_with(&layout) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{} is inside the layout {} being read; extract somewhere else",
                        out_dir.display(),
                        layout.display()
                    ),
                )
                .with_path(out_dir));
            }
        }
    }
    let temp = temp.to_path_buf();
    let outcome = async {
        let written = write_all(
            store.as_ref(),
            &from,
            &temp,
            &mut shape,
            &mut layers,
            &config_names,
            images_dir,
            options,
        )
        .await?;
        let mut notes = std::mem::take(&mut shape.notes);
        let (pack, epoch) = pack_file(
            &shape,
            &layers,
            &config_names,
            &claims,
            &written,
            &mut notes,
        );
        let flags = pack_flags(options, written.images.values());
        write_pack_file(
            &temp,
            &pack_name,
            &pack,
            reference,
            &root,
            &command(epoch, &flags, &pack_name),
            &notes,
        )?;
        merge_into(&temp, out_dir, options.force)?;
        Ok(Extracted {
            reference: reference.to_string(),
            digest: root.digest().to_string(),
            out_dir: out_dir.to_path_buf(),
            pack_file: out_dir.join(&pack_name),
            files: written.files,
            bytes: written.bytes,
            source_date_epoch: epoch,
            command: command(
                epoch,
                &flags,
                &out_dir.join(&pack_name).display().to_string(),
            ),
            images: written.images.keys().cloned().collect(),
            notes,
        })
    }
    .await;
    outcome
}
