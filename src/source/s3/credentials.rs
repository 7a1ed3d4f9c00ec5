//! The AWS credential chain and region of the S3 source, and the endpoint variables.

use std::path::{Path, PathBuf};

use object_store::aws::AwsCredentialProvider;

use super::uri::ObjectUri;
use crate::error::{Error, ErrorKind, Result};
use crate::transport;

/// Where credentials come from, and the credentials' provider (refreshing ones included).
#[derive(Debug, Clone)]
pub(super) struct Credentials {
    pub(super) provider: Option<AwsCredentialProvider>,
    /// For messages: "AWS_ACCESS_KEY_ID", "profile \"x\" in FILE", ….
    pub(super) from: String,
}

pub(super) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A profile of the shared config and credentials files.
#[derive(Debug, Default)]
pub(super) struct Profile {
    pub(super) key_id: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) token: Option<String>,
    pub(super) region: Option<String>,
    /// The files it was found in.
    pub(super) found_in: Vec<PathBuf>,
    /// The files looked in.
    pub(super) read: Vec<PathBuf>,
}

/// Reads profile `name` from the shared credentials file (`[name]`) and config file
/// (`[profile name]`, `[default]`), the credentials file winning.
pub(super) fn read_profile(name: &str) -> Result<Profile> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let mut p = Profile::default();
    let sources = [
        (
            file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            name.to_string(),
        ),
        (
            file("AWS_CONFIG_FILE", "config"),
            if name == "default" {
                "default".to_string()
            } else {
                format!("profile {name}")
            },
        ),
    ];
    for (path, section) in sources {
        let Some(path) = path else { continue };
        p.read.push(path.clone());
        let text = match read_small_file(&path) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => return Err(e),
        };
        let ini = parse_ini(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{}: not a valid AWS config file ({e})", path.display()),
            )
            .with_path(&path)
        })?;
        let Some(props) = ini.section(Some(section.as_str())) else {
            continue;
        };
        p.found_in.push(path.clone());
        let get = |k: &str| {
            props
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if p.key_id.is_none() && p.secret.is_none() {
            p.key_id = get("aws_access_key_id");
            p.secret = get("aws_secret_access_key");
            p.token = get("aws_session_token");
        }
        if p.region.is_none() {
            p.region = get("region");
        }
    }
    Ok(p)
}

/// An AWS config or credentials file: values are taken literally, as the AWS CLI does (no
/// quotes, no escapes).
pub(super) fn parse_ini(text: &str) -> std::result::Result<ini::Ini, ini::ParseError> {
    let literal = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ini::ParseOption::default()
    };
    ini::Ini::load_from_str_opt(text, literal)
}

/// The text of a small regular file of the user's (at most 1 MiB, else an error); `None`
/// when it does not exist. Never waits on a FIFO put in its place.
pub(super) fn read_small_file(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let f = match crate::fsutil::open_nonblocking(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let meta = f.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() || meta.len() > MAX {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{}: not an AWS config or credentials file (not a regular file of at most 1 MiB)",
                path.display()
            ),
        )
        .with_path(path));
    }
    let mut text = String::new();
    f.take(MAX)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(Some(text))
}

/// The credential chain: environment variables, then the profile (`AWS_PROFILE`, else
/// `default`) of the shared credentials and config files, then web identity and container
/// credentials when their variables are set, then — for AWS only, unless
/// `AWS_EC2_METADATA_DISABLED=true` — the instance metadata. Without any, requests go
/// unsigned (public buckets).
pub(super) fn credentials(
    uri: &ObjectUri,
    region: &str,
    http: &reqwest::Client,
    profile: &Profile,
    profile_name: &str,
) -> Result<Credentials> {
    let builder = || {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&uri.bucket)
            .with_region(region)
            .with_http_connector(transport::Connector(http.clone()))
            // The transport's retry policy retries the request that needed the credential.
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
    };
    let build = |b: object_store::aws::AmazonS3Builder, from: String| {
        let store = b.build().map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{uri}: cannot set up S3 credentials ({from}): {e}"),
            )
        })?;
        Ok(Credentials {
            provider: Some(store.credentials().clone()),
            from,
        })
    };
    let stat = |key_id: String, secret: String, token: Option<String>, from: String| {
        let mut b = builder()
            .with_access_key_id(key_id)
            .with_secret_access_key(secret);
        if let Some(t) = token {
            b = b.with_token(t);
        }
        build(b, from)
    };
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            return stat(
                id,
                secret,
                env("AWS_SESSION_TOKEN"),
                "AWS_ACCESS_KEY_ID".into(),
            )
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::new(
                ErrorKind::Authentication,
                format!("{uri}: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"),
            )
            .with_reference(uri.to_string()))
        }
        (None, None) => {}
    }
    let files = || {
        profile
            .found_in
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    };
    match (&profile.key_id, &profile.secret) {
        (Some(id), Some(secret)) => {
            return stat(
                id.clone(),
                secret.clone(),
                profile.token.clone(),
                format!("profile \"{profile_name}\" in {}", files()),
            )
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::new(
                ErrorKind::Authentication,
                format!(
                    "{uri}: profile \"{profile_name}\" in {} has only one of aws_access_key_id and aws_secret_access_key",
                    files()
                ),
            )
            .with_reference(uri.to_string()))
        }
        (None, None) => {}
    }
    let chosen = env("AWS_PROFILE").is_some() || env("AWS_DEFAULT_PROFILE").is_some();
    if chosen && profile.found_in.is_empty() {
        let read: Vec<String> = profile
            .read
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return Err(Error::new(
            ErrorKind::Authentication,
            format!(
                "{uri}: AWS_PROFILE names \"{profile_name}\", which is in neither {} (set AWS_SHARED_CREDENTIALS_FILE or AWS_CONFIG_FILE for other files)",
                read.join(" nor ")
            ),
        )
        .with_reference(uri.to_string()));
    }
    if let (Some(token), Some(role)) = (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
        let mut b = builder()
            .with_config(
                object_store::aws::AmazonS3ConfigKey::WebIdentityTokenFile,
                token,
            )
            .with_config(object_store::aws::AmazonS3ConfigKey::RoleArn, role);
        if let Some(name) = env("AWS_ROLE_SESSION_NAME") {
            b = b.with_config(object_store::aws::AmazonS3ConfigKey::RoleSessionName, name);
        }
        return build(b, "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)".into());
    }
    if let Some(rel) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        let b = builder().with_config(
            object_store::aws::AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
            rel,
        );
        return build(b, "container credentials".into());
    }
    if let (Some(full), Some(file)) = (
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    ) {
        let b = builder()
            .with_config(
                object_store::aws::AmazonS3ConfigKey::ContainerCredentialsFullUri,
                full,
            )
            .with_config(
                object_store::aws::AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
                file,
            );
        return build(b, "container credentials".into());
    }
    if chosen {
        return Err(Error::new(
            ErrorKind::Authentication,
            format!(
                "{uri}: profile \"{profile_name}\" in {} has no aws_access_key_id and aws_secret_access_key; oci-packer reads keys from profiles (not role_arn, sso_* or credential_process): export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead",
                files()
            ),
        )
        .with_reference(uri.to_string()));
    }
    let metadata_off =
        env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if uri.endpoint.is_none() && endpoint_override().is_none() && !metadata_off {
        return build(builder(), "the instance metadata".into());
    }
    Ok(Credentials {
        provider: None,
        from: "no credentials (unsigned requests)".into(),
    })
}

/// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`: another server for `s3://` URIs, with
/// the variable's name.
pub(super) fn endpoint_variable() -> Option<(&'static str, String)> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .into_iter()
        .find_map(|name| env(name).map(|v| (name, v.trim_end_matches('/').to_string())))
}

pub(super) fn endpoint_override() -> Option<String> {
    endpoint_variable().map(|(_, v)| v)
}

/// The endpoint variable, when set, must be an `http(s)://host[:port]` URL.
pub(super) fn check_endpoint_variable() -> Result<()> {
    let Some((name, value)) = endpoint_variable() else {
        return Ok(());
    };
    let parsed = reqwest::Url::parse(&value);
    if parsed
        .as_ref()
        .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
    {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{name} holds credentials; they do not go into the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ));
    }
    let ok = parsed.is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.query().is_none()
            && u.path() == "/"
    });
    if ok {
        return Ok(());
    }
    // A value with `@` may hold a password: not repeated.
    let shown = if value.contains('@') {
        String::new()
    } else {
        format!("=\"{value}\"")
    };
    Err(Error::new(
        ErrorKind::InvalidArgument,
        format!("{name}{shown} is not a server URL; write it like http://127.0.0.1:9000 or https://s3.example.com"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_values_are_literal() {
        let ini = parse_ini("[default]\naws_secret_access_key = ab\\cd\"e'\n").expect("ini");
        let secret = ini
            .section(Some("default"))
            .and_then(|s| s.get("aws_secret_access_key"));
        assert_eq!(secret, Some("ab\\cd\"e'"));
    }
}
