//! The `oci-packer` command line: parse, call the façade, print. No logic of its own.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::{Error, ErrorKind, Listing, Options, PackInput, RegistryOptions};

mod bars;
mod output;

/// Build OCI artifacts from declarative pack files and write them to registries and OCI image
/// layouts; copy them between both, extract them back into files, verify, delete and
/// garbage-collect them.
#[derive(Debug, Parser)]
#[command(
    name = "oci-packer",
    version,
    after_help = "The short form `oci-packer -f FILE TARGET` is the same as `oci-packer pack -f FILE TARGET`."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
    /// Pack file (short form, same as `pack -f`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Target (short form, same as `pack … TARGET`).
    #[arg(value_name = "TARGET")]
    target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct Global {
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr; no progress.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: Format,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value = "text", global = true)]
    format: Format,
    /// Blob transfers at once.
    #[arg(short = 'j', long, default_value_t = crate::DEFAULT_CONCURRENCY as u16, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    concurrency: u16,
    /// Directory for downloads and archives (default: the system temp dir).
    #[arg(long, value_name = "DIR", global = true)]
    tmp_dir: Option<PathBuf>,
    /// No progress bars, even on a terminal.
    #[arg(long, global = true)]
    no_progress: bool,
    /// Layouts: make blobs durable against a machine crash before index.json names them.
    #[arg(long, global = true)]
    fsync: bool,
    /// Registries: talk plain HTTP instead of HTTPS.
    #[arg(long, global = true, conflicts_with = "insecure")]
    plain_http: bool,
    /// Registries, https:// and s3+https:// sources: do not verify TLS certificates.
    #[arg(long, global = true)]
    insecure: bool,
    /// Registries, https:// and s3+https:// sources: also trust this CA certificate (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Network: fail a request when the server sends nothing for this many seconds (default
    /// 30); a small request also ends after twice this, a blob transfer after that plus the
    /// time its bytes take at 64 KiB/s.
    #[arg(long, value_name = "SECS", global = true, value_parser = clap::value_parser!(u64).range(1..=86400))]
    timeout: Option<u64>,
    /// Read and write no cache: downloads, digests of large files and S3 objects, and where
    /// registries hold blobs (for mounts) are all looked up and stored afresh.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Registry user name (also -l).
    #[arg(
        short = 'u',
        long = "username",
        visible_alias = "login",
        short_alias = 'l',
        global = true
    )]
    username: Option<String>,
    /// Registry password (prefer --password-stdin: arguments are visible to other users).
    #[arg(short = 'p', long, global = true, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, global = true)]
    password_stdin: bool,
    /// Docker config file with registry credentials (default: $DOCKER_CONFIG/config.json,
    /// ~/.docker/config.json).
    #[arg(long, value_name = "PATH", global = true)]
    registry_config: Option<PathBuf>,
}

/// A size in bytes: a number, or with a unit (`K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`
/// are powers of 1024; `KB`, `MB`, `GB`, `TB` powers of 1000).
fn size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let bad =
        || format!("\"{value}\" is not a size: write a number of bytes, or e.g. 500MiB, 2G, 1TB");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("\"{value}\" is too large"))
}

/// `--unpack` for writes into layouts, with the extraction limits.
#[derive(Debug, Args)]
struct UnpackArgs {
    /// Layouts: also extract every tar layer into DIR/unpacked/sha256/<hex>/ (blobs stay as
    /// they are); whiteouts become overlayfs whiteouts when run as root.
    #[arg(long)]
    unpack: bool,
    /// Most bytes one archive layer may extract to (a number, or with a unit: 500MiB, 2G).
    #[arg(long, value_name = "SIZE", default_value = "64GiB", value_parser = size)]
    max_bytes: u64,
    /// Most entries one archive layer may hold.
    #[arg(long, value_name = "N", default_value_t = crate::DEFAULT_MAX_ENTRIES)]
    max_entries: u64,
}

impl UnpackArgs {
    fn apply(&self, opts: &mut Options) {
        opts.unpack = self.unpack;
        opts.max_bytes = self.max_bytes;
        opts.max_entries = self.max_entries;
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the artifact described by a pack file and write it to TARGET (host/repo[:tag] or
    /// oci://DIR[:REF]).
    Pack(PackArgs),
    /// Check a pack file and print every problem; exit 0 when it is valid.
    Validate {
        /// The pack file (may also come before the command).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// List a layout's entries, a repository's tags, or one artifact's tree.
    List {
        /// oci://DIR, host/repo (its tags), or one artifact: oci://DIR:REF, host/repo:tag, …@sha256:…
        reference: String,
    },
    /// Copy an artifact between registries and layouts (any direction), digests unchanged.
    Copy {
        /// Source: host/repo[:tag|@digest], docker://…, cr://…, oci://DIR[:REF].
        src: String,
        /// Destination, same forms.
        dst: String,
        /// Copy only the member of an index that best matches os/arch[/variant].
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
        #[command(flatten)]
        unpack: UnpackArgs,
    },
    /// Hash every blob of an artifact's graph again; one line per problem, exit 1 on any.
    Verify {
        /// oci://DIR:REF, host/repo:tag, or …@sha256:….
        reference: String,
    },
    /// Delete a layout entry (oci://DIR:REF) and every blob no remaining entry uses, or a
    /// registry manifest with every tag on it (host/repo:tag, needs --force).
    Delete {
        /// oci://DIR:REF, oci://DIR@sha256:…, or host/repo:tag.
        reference: String,
        /// Print what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Registries: delete the manifest even though every tag on it goes too.
        #[arg(long)]
        force: bool,
    },
    /// Remove the blobs that no entry of a layout uses, and temp files older than an hour.
    Gc {
        /// oci://DIR.
        reference: String,
        /// Print what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write an artifact's layers and config as files, with a pack.yaml that packs them again
    /// to the same digest.
    Extract {
        /// oci://DIR:REF, host/repo:tag, or …@sha256:….
        reference: String,
        /// Where to write (missing or empty unless --force).
        out_dir: PathBuf,
        /// Extract only the member of an index that best matches os/arch[/variant].
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
        /// Extract archive layers other programs made into directories (they are written as
        /// archive files otherwise).
        #[arg(long)]
        unpack: bool,
        /// Copy image members into OUTDIR/images/ so that the pack file packs offline.
        #[arg(long)]
        images: bool,
        /// Write into a non-empty OUTDIR, replacing the files extract writes.
        #[arg(long)]
        force: bool,
        /// Most bytes one archive layer may extract to (a number, or with a unit: 500MiB, 2G).
        #[arg(long, value_name = "SIZE", default_value = "64GiB", value_parser = size)]
        max_bytes: u64,
        /// Most entries one archive layer may hold.
        #[arg(long, value_name = "N", default_value_t = crate::DEFAULT_MAX_ENTRIES)]
        max_entries: u64,
    },
    /// Mount an image of a layout as a read-only overlayfs at DIR (Linux, root), or write
    /// systemd mount units for it.
    Mount {
        /// oci://DIR:REF (an index: the member for this machine, or --platform).
        reference: String,
        /// The mount point (missing or empty; not / and not inside a layout).
        dir: PathBuf,
        /// Mount the member of an index that best matches os/arch[/variant].
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
        /// Allow setuid/setgid programs (default: nosuid).
        #[arg(long)]
        suid: bool,
        /// Allow device nodes (default: nodev).
        #[arg(long)]
        dev: bool,
        /// Bind-mount a host directory at PATH inside the image, nosuid,nodev unless --suid
        /// or --dev (repeatable).
        #[arg(long, value_name = "HOST:PATH")]
        bind: Vec<String>,
        /// A tmpfs at PATH inside the image, optionally of SIZE: bytes with k, m or g, or
        /// 1%-100% of memory (e.g. /tmp:64m; repeatable; /tmp, /run and /var/tmp get one by
        /// default when the image has them and nothing else is mounted there).
        #[arg(long, value_name = "PATH[:SIZE]")]
        tmpfs: Vec<String>,
        /// No default tmpfs mounts.
        #[arg(long)]
        no_tmpfs: bool,
        /// Hash the image's blobs again before mounting (unpacked layers are not made again).
        #[arg(long)]
        verify: bool,
        /// Write systemd .mount units instead of mounting.
        #[arg(long)]
        persistent: bool,
        /// Where --persistent writes the units.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/etc/systemd/system",
            requires = "persistent"
        )]
        unit_dir: PathBuf,
        /// With --persistent: systemctl daemon-reload, then enable --now the units.
        #[arg(long, requires = "persistent")]
        enable: bool,
        #[command(flatten)]
        limits: UnpackArgs,
    },
    /// Unmount everything mounted at and below DIR, deepest first (Linux, root).
    Umount {
        /// The mount point.
        dir: PathBuf,
        /// Detach busy mounts (MNT_DETACH) instead of failing.
        #[arg(long)]
        lazy: bool,
    },
    /// Check credentials for a registry and store them in the Docker config.
    Login {
        /// Registry host, e.g. registry.example.com or localhost:5000.
        host: String,
    },
    /// Remove stored credentials for a registry from the Docker config.
    Logout {
        /// Registry host.
        host: String,
    },
    /// Print the completion script for a shell (bash: `source <(oci-packer completion bash)`).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (oci-packer.1 and one per command) into DIR (hidden: scripts/man
    /// runs it).
    #[command(name = "generate-man", hide = true)]
    GenerateMan {
        /// Where to write the pages.
        dir: PathBuf,
    },
    /// Serve the files (titled layers) of artifacts over HTTP, read-only, from a registry
    /// or a layout: GET /REPO/REF?title=T or /REPO/REF/files/T; /REPO/REF/files/ lists them.
    Proxy {
        /// A registry host (host[:port], with the registry flags) or a layout (oci://DIR).
        upstream: String,
        /// Where to listen (IP:PORT; port 0 picks a free one).
        #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
        addr: String,
        /// Seconds a tag's answer is kept before the upstream is asked again (digests are
        /// kept for good).
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        tag_ttl: u64,
    },
}

/// The words that name commands, this version's and the original tool's: a short-form
/// TARGET that is one of them was meant as a command.
const COMMAND_WORDS: &[&str] = &[
    "pack",
    "validate",
    "list",
    "copy",
    "verify",
    "login",
    "logout",
    "completion",
    "extract",
    "delete",
    "gc",
    "mount",
    "umount",
    "proxy",
    "push",
    "pull",
    "help",
    "version",
];

/// Checks the TARGET of the short form `-f FILE TARGET`: a bare word (no `/`, `:` or `.`)
/// — a command name, a tag, a directory — is a usage error that says what to write, never
/// a push to `index.docker.io/library/WORD`.
fn short_form_target(target: &str) -> Result<(), Error> {
    let bare = !target.contains(['/', ':', '.']);
    if bare && COMMAND_WORDS.contains(&target) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "\"{target}\" is a command, not a target: write `oci-packer {target} …` \
                 (commands come before -f), or give a target such as oci://DIR:TAG or \
                 registry.example.com/repo:tag"
            ),
        ));
    }
    // A bare word would be Docker Hub's `library/WORD`, which only Docker's official images
    // may push to: it is always a slip (a command, a tag, a directory).
    if bare {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "\"{target}\" is neither a command nor a target: to pack, write \
                 `oci-packer -f FILE TARGET` with a target such as oci://DIR:TAG or \
                 registry.example.com/repo:tag; for the commands, see `oci-packer --help`"
            ),
        ));
    }
    Ok(())
}

/// The value of `--created`: `now` or what looks like an RFC 3339 time (checked fully
/// later), so that a target written right after a bare `--created` is not taken for it.
fn created_time(value: &str) -> Result<String, String> {
    let dated = value.len() >= 10
        && value.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && value.as_bytes()[4] == b'-';
    if value == "now" || dated {
        Ok(value.to_string())
    } else {
        Err(format!(
            "--created \"{value}\": give now or an RFC 3339 time such as 2024-01-02T03:04:05Z \
             (a bare --created means now: put it after the target, or write --created=now)"
        ))
    }
}

/// Checks a TARGET that will be written (`pack TARGET`, `copy SRC DST`): a bare word is
/// never one (see [`short_form_target`]) — Docker Hub's `library/` is not writable, and the
/// word is nearly always a directory missing its `oci://`.
fn write_target(target: &str) -> Result<(), Error> {
    if !target.contains(['/', ':', '.']) {
        let hint = if std::path::Path::new(target).exists() {
            format!("; for the local directory write oci://{target}:TAG")
        } else {
            String::new()
        };
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "\"{target}\" is not a target: write a layout as oci://DIR:TAG or a registry \
                 repository as HOST/REPO:TAG{hint}"
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Args)]
struct PackArgs {
    /// The pack file (may also come before the command: `oci-packer -f FILE pack TARGET`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Where to write: a registry host/repo[:tag] (also docker://, cr://, oci://host/…) or a
    /// layout oci://DIR[:REF] (REF defaults to latest).
    #[arg(value_name = "TARGET", required_unless_present = "dry_run")]
    target: Option<String>,
    /// Print the manifest or index JSON that would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Add org.opencontainers.image.created to the root: "now" or an RFC 3339 time
    /// (default: from SOURCE_DATE_EPOCH when set, else no timestamp).
    #[arg(
        long,
        value_name = "TIME",
        num_args = 0..=1,
        default_missing_value = "now",
        value_parser = created_time
    )]
    created: Option<String>,
    #[command(flatten)]
    unpack: UnpackArgs,
}

fn init_logging(g: &Global) {
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    // The proxy's access log is on unless -q.
    let access = if g.quiet { "error" } else { "info" };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("OCI_PACKER_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "oci_packer={level},oci_packer::proxy::access={access},warn"
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match g.log_format {
        Format::Json => builder.json().try_init(),
        // Log fields carry URLs, paths and errors from outside: escaped like every other
        // text this program prints.
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(printable_fields())
            .try_init(),
    };
}

/// Formats log fields as tracing does (`message`, then `name=value`), each value escaped
/// (see [`crate::text::printable`]).
fn printable_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = crate::text::printable(&text);
        match field.name() {
            "message" => write!(w, "{text}"),
            name => write!(w, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// The command line as completions and man pages show it: every flag and every command
/// but the hidden ones (the man-page generator, the original tool's missing commands).
fn documented_command() -> clap::Command {
    use clap::CommandFactory;
    let full = Cli::command();
    let mut cmd = clap::Command::new("oci-packer");
    if let Some(text) = full.get_about() {
        cmd = cmd.about(text.clone());
    }
    cmd = cmd.version(crate::VERSION);
    for a in full.get_arguments() {
        cmd = cmd.arg(a.clone());
    }
    for s in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(s.clone());
    }
    cmd
}

/// Raises the soft limit of open files to the hard one, as Go programs do: a pack keeps
/// each large file it spooled open until the layout adopts it, and 1,024 (a common soft
/// limit) is not many.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// Whether the arguments ask for JSON output (`--format json`, `--format=json`), read
/// without the parser: for the parser's own errors.
fn wants_json(args: &[OsString]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--format" && w[1] == "json")
        || args.iter().any(|a| a == "--format=json")
}

/// Runs the command line; returns the exit status (0 ok, 1 failed, 2 bad usage or pack file).
pub fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> i32 {
    raise_open_file_limit();
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() && wants_json(&args) => {
            // A usage error is an error like any other: as JSON when JSON was asked for.
            let message = e.render().to_string();
            let message = message.trim_start_matches("error: ").trim_end();
            output::error(
                Format::Json,
                &Error::new(ErrorKind::InvalidArgument, message.to_string()),
            );
            return 2;
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_logging(&cli.global);
    let format = cli.global.format;
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            output::error(format, &e);
            match crate::runtime::signalled() {
                // Interrupted: the usual status of the signal (what was written stays valid).
                Some(status) if e.kind() == ErrorKind::Cancelled => status,
                _ if e.kind().is_usage() => 2,
                _ => 1,
            }
        }
    }
}

fn options(g: &Global) -> (Options, Option<bars::BarsGuard>) {
    let show_bars = !g.quiet && !g.no_progress && std::io::stderr().is_terminal();
    let (progress, guard) = if show_bars {
        let (p, g) = bars::progress();
        (p, Some(g))
    } else {
        Default::default()
    };
    let opts = Options {
        concurrency: usize::from(g.concurrency),
        tmp_dir: g.tmp_dir.clone(),
        fsync: g.fsync,
        progress,
        cancel: interruptible(),
        ..Options::default()
    };
    (opts, guard)
}

/// A cancel handle that Ctrl-C (or SIGTERM) fires: the operation stops cleanly.
fn interruptible() -> Option<crate::Cancel> {
    let cancel = crate::Cancel::new();
    crate::runtime::cancel_on_signals(&cancel).ok()?;
    Some(cancel)
}

fn registry_options(g: &Global) -> Result<RegistryOptions, Error> {
    let password = if g.password_stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("reading the password from stdin: {e}"),
            )
        })?;
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    } else {
        g.password.clone()
    };
    Ok(RegistryOptions {
        plain_http: g.plain_http,
        insecure: g.insecure,
        ca_file: g.ca_file.clone(),
        username: g.username.clone(),
        password,
        config: g.registry_config.clone(),
        timeout: g.timeout.map(std::time::Duration::from_secs),
        no_cache: g.no_cache,
    })
}

fn execute(cli: Cli) -> Result<i32, Error> {
    let g = &cli.global;
    let file_before = cli.file.clone();
    // `-f FILE` before the command serves a command that takes one.
    let pack_file = |own: Option<PathBuf>, command: &str| {
        own.or_else(|| file_before.clone()).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("{command} needs a pack file: -f FILE"),
            )
        })
    };
    let command = match (cli.command, cli.file, cli.target) {
        (Some(c), _, None) => c,
        (Some(_), _, Some(target)) => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("unexpected \"{target}\" before the command; see --help"),
            ))
        }
        (None, Some(file), Some(target)) => {
            short_form_target(&target)?;
            Command::Pack(PackArgs {
                file: Some(file),
                target: Some(target),
                dry_run: false,
                created: None,
                unpack: UnpackArgs {
                    unpack: false,
                    max_bytes: crate::DEFAULT_MAX_BYTES,
                    max_entries: crate::DEFAULT_MAX_ENTRIES,
                },
            })
        }
        (None, None, Some(target)) => {
            short_form_target(&target)?;
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("no pack file: write `oci-packer -f FILE {target}` (or see --help)"),
            ));
        }
        (None, _, _) => {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "nothing to do: give a command (see --help), or -f FILE TARGET to pack",
            ))
        }
    };
    let mut out = std::io::stdout().lock();
    match command {
        Command::Pack(a) => {
            let (mut opts, bars) = options(g);
            opts.registry = registry_options(g)?;
            opts.dry_run = a.dry_run;
            opts.created = a.created;
            a.unpack.apply(&mut opts);
            let target = a.target.unwrap_or_default();
            if !a.dry_run {
                write_target(&target)?;
            }
            let file = pack_file(a.file, "pack")?;
            let packed = crate::pack(PackInput::File(file), &target, &opts)?;
            drop(bars);
            output::packed(&mut out, g.format, &packed, a.dry_run)
        }
        Command::Validate { file } => {
            let file = pack_file(file, "validate")?;
            let problems = crate::validate(PackInput::File(file.clone()))?;
            output::validated(&mut out, g.format, &file, &problems)?;
            Ok(if problems.is_empty() { 0 } else { 2 })
        }
        Command::List { reference } => {
            let opts = Options {
                registry: registry_options(g)?,
                cancel: interruptible(),
                ..Options::default()
            };
            let listing: Listing = crate::list(&reference, &opts)?;
            output::listing(&mut out, g.format, &listing)
        }
        Command::Copy {
            src,
            dst,
            platform,
            unpack,
        } => {
            write_target(&dst)?;
            let (mut opts, bars) = options(g);
            opts.registry = registry_options(g)?;
            opts.platform = platform;
            unpack.apply(&mut opts);
            let copied = crate::copy(&src, &dst, &opts)?;
            drop(bars);
            output::copied(&mut out, g.format, &copied)
        }
        Command::Verify { reference } => {
            let opts = Options {
                registry: registry_options(g)?,
                cancel: interruptible(),
                ..Options::default()
            };
            let verification = crate::verify(&reference, &opts)?;
            output::verified(&mut out, g.format, &verification)
        }
        Command::Delete {
            reference,
            dry_run,
            force,
        } => {
            let opts = Options {
                registry: registry_options(g)?,
                dry_run,
                force,
                cancel: interruptible(),
                ..Options::default()
            };
            let deleted = crate::delete(&reference, &opts)?;
            output::deleted(&mut out, g.format, &deleted)
        }
        Command::Gc { reference, dry_run } => {
            let opts = Options {
                dry_run,
                cancel: interruptible(),
                ..Options::default()
            };
            let deleted = crate::gc(&reference, &opts)?;
            output::deleted(&mut out, g.format, &deleted)
        }
        Command::Extract {
            reference,
            out_dir,
            platform,
            unpack,
            images,
            force,
            max_bytes,
            max_entries,
        } => {
            let (mut opts, bars) = options(g);
            opts.registry = registry_options(g)?;
            opts.platform = platform;
            opts.unpack = unpack;
            opts.images = images;
            opts.force = force;
            opts.max_bytes = max_bytes;
            opts.max_entries = max_entries;
            let extracted = crate::extract(&reference, &out_dir, &opts)?;
            drop(bars);
            output::extracted(&mut out, g.format, &extracted)
        }
        Command::Mount {
            reference,
            dir,
            platform,
            suid,
            dev,
            bind,
            tmpfs,
            no_tmpfs,
            verify,
            persistent,
            unit_dir,
            enable,
            limits,
        } => {
            let mut opts = Options {
                platform,
                cancel: interruptible(),
                ..Options::default()
            };
            limits.apply(&mut opts);
            let spec = crate::MountSpec {
                suid,
                dev,
                binds: bind,
                tmpfs,
                no_tmpfs,
                verify,
                persistent,
                unit_dir: Some(unit_dir),
                enable,
            };
            let mounted = crate::mount(&reference, &dir, &spec, &opts)?;
            output::mounted(&mut out, g.format, &mounted)
        }
        Command::Umount { dir, lazy } => {
            let done = crate::umount(&dir, lazy)?;
            output::unmounted(&mut out, g.format, &done)
        }
        Command::Login { host } => {
            let path = crate::login(&host, &registry_options(g)?)?;
            output::message(
                &mut out,
                g.format,
                &format!("Login succeeded; credentials stored in {}", path.display()),
                serde_json::json!({"host": host, "config": path}),
            )
        }
        Command::Completion { shell } => {
            let mut cmd = documented_command();
            if shell != clap_complete::Shell::Bash {
                clap_complete::generate(shell, &mut cmd, "oci-packer", &mut out);
                return Ok(0);
            }
            // clap_complete's bash script mangles a program name with a hyphen in two
            // different ways, so that no command's options complete: generate it for a name
            // without one, then register it for `oci-packer`.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ocipacker", &mut script);
            let script = String::from_utf8_lossy(&script);
            for line in script.lines() {
                let line = match line.trim_start().starts_with("complete -F") {
                    true => line.replace(" ocipacker", " oci-packer"),
                    false => line.to_string(),
                };
                writeln!(out, "{line}").map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
            }
            Ok(0)
        }
        Command::GenerateMan { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
            clap_mangen::generate_to(documented_command(), &dir)
                .map_err(|e| Error::io("writing man pages to", &dir, e))?;
            Ok(0)
        }
        Command::Proxy {
            upstream,
            addr,
            tag_ttl,
        } => {
            let opts = Options {
                registry: registry_options(g)?,
                cancel: interruptible(),
                ..Options::default()
            };
            let proxy = crate::Proxy::bind(&upstream, &crate::ServeSpec { addr, tag_ttl }, &opts)?;
            let at = proxy.local_addr()?;
            output::message(
                &mut out,
                g.format,
                &format!("Serving {upstream} on http://{at} (Ctrl-C stops)"),
                serde_json::json!({"upstream": upstream, "addr": at.to_string()}),
            )?;
            out.flush()
                .map_err(|e| Error::new(ErrorKind::Io, format!("writing to stdout: {e}")))?;
            proxy.run()?;
            Ok(0)
        }
        Command::Logout { host } => {
            let removed = crate::logout(&host, &registry_options(g)?)?;
            let text = if removed {
                format!("Removed credentials for {host}")
            } else {
                format!("No credentials stored for {host}")
            };
            output::message(
                &mut out,
                g.format,
                &text,
                serde_json::json!({"host": host, "removed": removed}),
            )
        }
    }
    .and_then(|code| {
        out.flush()
            .map_err(|e| Error::new(ErrorKind::Io, format!("writing to stdout: {e}")))?;
        Ok(code)
    })
}
