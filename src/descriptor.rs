//! The public descriptor: what a manifest or index says about one blob (OCI image spec,
//! "Descriptors"), as results and listings hand it out. It serialises as OCI descriptor JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// A content descriptor: media type, digest and size of a blob, with the optional
/// `artifactType`, `platform` and `annotations` of the OCI image spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The platform of an index member (OCI image index, `platform`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system (`linux`, `windows`, …).
    pub os: String,
    /// OS version (`os.version`, Windows builds).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// Required OS features (`os.features`, e.g. `win32k`); empty when none.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    /// `os[(os.version[+feature…])]/architecture[/variant]`, as the pack file writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::platform::write_platform(
            f,
            &self.os,
            self.os_version.as_deref(),
            &self.os_features,
            &self.architecture,
            self.variant.as_deref(),
        )
    }
}

impl Descriptor {
    /// The media type of the blob (`application/vnd.oci.image.manifest.v1+json`, …).
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// `sha256:<64 hex>`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `artifactType`, when set.
    pub fn artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref()
    }

    /// The platform of an index member, when set.
    pub fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }

    /// The annotations (empty when none).
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }

    /// The descriptor of the crate's internal model, converted through its OCI JSON.
    pub(crate) fn from_oci(d: &oci_spec::image::Descriptor) -> Result<Descriptor> {
        serde_json::from_value(crate::json::to_value(d)?).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("descriptor {}: {e}", d.digest()),
            )
        })
    }
}
