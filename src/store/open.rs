//! The one factory that opens a [`Target`] from a parsed reference, keeping one HTTP client
//! (and so one token cache) per registry host for the whole operation, and what an opened
//! reference resolves and tags.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use oci_spec::image::Descriptor;

use super::layout::Layout;
use super::registry::client::Client;
use super::registry::Registry;
use super::{fetch_small, Target};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::mediatype;
use crate::platform::Platform;
use crate::reference::{LayoutSelector, Reference};
use crate::transport::RegistryOptions;

/// Refuses a registry reference the user wrote that is surely a slip: as a place to write,
/// Docker Hub's short form (`out:v1`, `localhost:5000`, `out.tar`: no host, no namespace);
/// and `oci://HOST/…` whose HOST is also a directory here (`oci://build.d/x` with a local
/// `build.d`), which could mean either.
fn check_named_registry(text: &str, r: &crate::reference::RegistryRef, write: bool) -> Result<()> {
    let refuse = |why: String| {
        Err(
            Error::new(ErrorKind::InvalidReference, format!("\"{text}\" {why}"))
                .with_reference(text),
        )
    };
    if let Some(rest) = text.strip_prefix("oci://") {
        let first = rest.split('/').next().unwrap_or_default();
        if std::path::Path::new(first).is_dir() {
            return refuse(format!(
                "could be the registry {} or the local directory ./{first}: write \
                 oci://./{rest} for the layout, or docker://{rest} for the registry",
                r.host
            ));
        }
    }
    let Some(name) = crate::reference::docker_hub_short_name(text).filter(|_| write) else {
        return Ok(());
    };
    let tag = r.tag.as_deref().unwrap_or("TAG");
    let hint =
        if tag.bytes().all(|b| b.is_ascii_digit()) && (name == "localhost" || name.contains('.')) {
            format!("names a registry host, not a repository: write {name}:{tag}/REPO:TAG")
        } else if [".tar", ".tgz", ".tar.gz", ".zip"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            format!(
                "looks like an archive file; archives are not written: write a layout directory \
             as oci://DIR:{tag}, or a registry repository as HOST/REPO:{tag}"
            )
        } else {
            let local = match std::path::Path::new(name).exists() {
                true => format!(" (./{name} exists)"),
                false => String::new(),
            };
            format!(
                "would be Docker Hub's library/{name}, where only official images are \
             published: for a local layout write oci://{name}:{tag}{local}, for a registry \
             HOST/REPO:{tag}"
            )
        };
    refuse(hint)
}

/// Refuses a reference without a scheme whose name is an OCI layout here (`lay:v1` with a
/// local `./lay/oci-layout`): it would name Docker Hub's `library/lay`, surely not meant.
fn check_layout_without_scheme(text: &str) -> Result<()> {
    if text.contains("://") {
        return Ok(());
    }
    let name = text.split(['@', ':']).next().unwrap_or(text);
    if name.is_empty() || !std::path::Path::new(name).join("oci-layout").is_file() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidReference,
        format!(
            "\"{text}\" names a registry repository, but ./{name} is an OCI layout here: write \
             oci://{text} for the layout"
        ),
    )
    .with_reference(text))
}

/// Opens targets for one operation.
#[derive(Debug)]
pub(crate) struct Targets {
    registry: RegistryOptions,
    fsync: bool,
    tmp_dir: Option<PathBuf>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Registry hosts the user named for this operation (its target, `copy`'s source and
    /// destination, `list`'s reference): only they get the `-u`/`-p` credentials. A host a
    /// pack file names for an image item gets the Docker config's credentials for it alone,
    /// so a pack file from elsewhere cannot collect the user's password.
    named_hosts: Mutex<std::collections::HashSet<String>>,
}

/// A target opened from a reference, with the tag (or layout name) and digest it names.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    /// The target.
    pub target: Arc<dyn Target>,
    /// The reference as written, for messages.
    pub text: String,
    /// The tag or layout name, when the reference has one.
    pub tag: Option<String>,
    /// The digest, when the reference has one; it wins over the tag for reading.
    pub digest: Option<Digest>,
}

impl Targets {
    /// A factory with the operation's registry options, `--fsync` and `--tmp-dir`.
    pub fn new(registry: &RegistryOptions, fsync: bool, tmp_dir: Option<PathBuf>) -> Targets {
        Targets {
            registry: registry.clone(),
            fsync,
            tmp_dir,
            clients: Mutex::default(),
            named_hosts: Mutex::default(),
        }
    }

    /// The client for `host`, made once per operation.
    fn client(&self, host: &str) -> Result<Arc<Client>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(host) {
            return Ok(c.clone());
        }
        let named = self
            .named_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(host);
        let options = if named {
            self.registry.clone()
        } else {
            RegistryOptions {
                username: None,
                password: None,
                ..self.registry.clone()
            }
        };
        let c = Arc::new(Client::new(host, &options)?);
        clients.insert(host.to_string(), c.clone());
        Ok(c)
    }

    /// Parses and opens `text`, a reference the user named (its registry host gets the
    /// `-u`/`-p` credentials).
    pub fn open_str(&self, text: &str, write: bool) -> Result<Opened> {
        check_layout_without_scheme(text)?;
        let reference = Reference::parse(text)?;
        if let Reference::Registry(r) = &reference {
            check_named_registry(text, r, write)?;
        }
        if let Reference::Registry(r) = &reference {
            self.named_hosts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(r.host.clone());
        }
        self.open(reference, text, write)
    }

    /// Opens a parsed reference for reading, or for writing (a new layout is created on
    /// its first write; a layout target needs a name, not a digest).
    pub fn open(&self, reference: Reference, text: &str, write: bool) -> Result<Opened> {
        match reference {
            Reference::Layout(l) => {
                let (tag, digest) = match l.selector {
                    LayoutSelector::Name(n) => (Some(n), None),
                    LayoutSelector::NameAndDigest(n, d) => (Some(n), Some(d)),
                    LayoutSelector::Digest(d) if !write => (None, Some(d)),
                    LayoutSelector::Digest(_) => {
                        return Err(Error::new(
                            ErrorKind::InvalidReference,
                            format!(
                                "{text}: a layout target needs a name (oci://DIR:REF), not a digest"
                            ),
                        )
                        .with_reference(text))
                    }
                };
                let layout = if write {
                    Layout::open(&l.dir, self.fsync)?
                } else {
                    Layout::open_existing(&l.dir)?
                };
                Ok(Opened {
                    target: Arc::new(layout),
                    text: text.to_string(),
                    tag,
                    digest,
                })
            }
            Reference::Registry(r) => {
                let registry =
                    Registry::with_client(self.client(&r.host)?, &r, self.tmp_dir.clone());
                Ok(Opened {
                    target: Arc::new(registry),
                    text: text.to_string(),
                    tag: r.tag.clone(),
                    digest: r.digest.clone(),
                })
            }
        }
    }
}

impl Opened {
    /// The descriptor the reference names: its digest, else its tag, else `latest`.
    pub async fn resolve(&self) -> Result<Descriptor> {
        let reference = match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str().to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        self.target.resolve(&reference).await
    }

    /// Names `desc` with the reference's tag. A reference with a digest must name this very
    /// content (checked before any tag is written); by digest alone it needs no tag.
    /// `manifest` is its bytes when the caller has them.
    pub async fn tag(&self, desc: &Descriptor, manifest: Option<Bytes>) -> Result<()> {
        if let Some(d) = &self.digest {
            if d.as_str() != desc.digest().as_ref() {
                return Err(Error::new(
                    ErrorKind::DigestMismatch,
                    format!(
                        "{}: the artifact has digest {}, not the one in the reference; nothing \
                         was tagged (drop the digest, or fix it)",
                        self.text,
                        desc.digest()
                    ),
                )
                .with_digest(desc.digest().to_string())
                .with_reference(&self.text));
            }
        }
        match &self.tag {
            Some(t) => self.target.tag(desc, t, manifest).await,
            None => Ok(()),
        }
    }
}

/// [`select_platform`] for a `--platform` the user gave on `reference`: a single manifest
/// is returned as it is, with a warning that the option selected nothing.
pub(crate) async fn select_wanted_platform(
    store: &dyn Target,
    root: &Descriptor,
    wanted: &Platform,
    reference: &str,
) -> Result<Descriptor> {
    if !mediatype::is_index(root.media_type().as_ref()) {
        tracing::warn!(
            "{reference} is a single manifest, not an index: --platform {wanted} selects \
             nothing and the manifest is taken as it is"
        );
    }
    select_platform(store, root, wanted)
        .await
        .map_err(|e| e.context(reference))
}

/// When `root` is an index, the member that best matches `wanted` (a platform as written,
/// see [`Platform::best_match`]; SPEC §4 `--platform`);
/// a manifest is returned as it is.
pub(crate) async fn select_platform(
    store: &dyn Target,
    root: &Descriptor,
    wanted: &Platform,
) -> Result<Descriptor> {
    if !mediatype::is_index(root.media_type().as_ref()) {
        return Ok(root.clone());
    }
    let data: Bytes = fetch_small(store, root).await?;
    let index: oci_spec::image::ImageIndex = crate::json::from_slice(&data).map_err(|e| {
        Error::new(
            ErrorKind::Registry,
            format!("{}: invalid index: {e}", root.digest()),
        )
    })?;
    let members = index.manifests();
    let candidates: Vec<Platform> = members
        .iter()
        .filter_map(|m| m.platform().as_ref().map(Platform::from_oci))
        .collect();
    let with_platform: Vec<&Descriptor> =
        members.iter().filter(|m| m.platform().is_some()).collect();
    match wanted.best_match(&candidates) {
        Some(i) => Ok(with_platform[i].clone()),
        None => {
            let available: Vec<String> = candidates.iter().map(ToString::to_string).collect();
            Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no member of {} matches platform {wanted} (available: {})",
                    root.digest(),
                    if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join(", ")
                    }
                ),
            ))
        }
    }
}
