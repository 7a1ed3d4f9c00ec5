//! `oci_packer._native`: the Python module. Thin: convert arguments, release the GIL, call the
//! façade, map errors to the exception classes of `oci_packer.errors`. No logic lives here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_packer::{Cancel, Error, Options, PackInput, Progress, ProgressEvent, RegistryOptions};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;

/// Forwards the library's `tracing` events to the `logging` logger `oci_packer`, with the
/// matching level; installed on the first API call (not by `run_cli`, whose logs go to
/// stderr as the CLI's do). Events below the logger's effective level are dropped without
/// taking the GIL: the level is cached ([`LOG_LEVEL`]) and read again at the start of every
/// call, as pyo3-log does.
struct PythonLogging;

/// The `logging` level of the logger `oci_packer` (10 debug … 50 critical), as last read.
static LOG_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(30);

/// The `logging` level of a `tracing` level.
fn python_level(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 40,
        tracing::Level::WARN => 30,
        tracing::Level::INFO => 20,
        _ => 10,
    }
}

/// Reads the effective level of the logger `oci_packer` into [`LOG_LEVEL`].
fn refresh_log_level(py: Python<'_>) {
    let level = py
        .import("logging")
        .and_then(|l| l.call_method1("getLogger", ("oci_packer",)))
        .and_then(|l| l.call_method0("getEffectiveLevel"))
        .and_then(|l| l.extract::<i64>());
    if let Ok(level) = level {
        LOG_LEVEL.store(
            level.clamp(0, 255) as u8,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PythonLogging {
    /// Asked again for every event (the level may change between calls), never cached.
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        match meta.target().starts_with("oci_packer") {
            true => tracing::subscriber::Interest::sometimes(),
            false => tracing::subscriber::Interest::never(),
        }
    }

    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        meta.target().starts_with("oci_packer")
            && python_level(meta.level()) >= LOG_LEVEL.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let level = python_level(event.metadata().level());
        let mut message = Message(String::new());
        event.record(&mut message);
        Python::attach(|py| {
            let log = || -> PyResult<()> {
                let logger = py
                    .import("logging")?
                    .call_method1("getLogger", ("oci_packer",))?;
                logger.call_method1("log", (level, message.0.trim()))?;
                Ok(())
            };
            let _ = log();
        });
    }
}

fn install_logging(py: Python<'_>) {
    refresh_log_level(py);
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(PythonLogging),
        );
    });
}

/// The Python exception class for each error kind (defined in `oci_packer/errors.py`).
fn class_name(e: &Error) -> &'static str {
    use oci_packer::ErrorKind as K;
    match e.kind() {
        K::PackFile => "PackFileError",
        K::InvalidReference => "InvalidReferenceError",
        K::SourceNotFound => "SourceNotFoundError",
        K::Authentication => "AuthenticationError",
        K::NotFound => "NotFoundError",
        K::DigestMismatch => "DigestMismatchError",
        K::Registry => "RegistryError",
        K::Network => "NetworkError",
        K::Io => "OciIOError",
        K::Unsupported => "UnsupportedError",
        K::Cancelled => "CancelledError",
        K::InvalidArgument => "InvalidArgumentError",
        K::UnsafeContent => "UnsafeContentError",
        _ => "InternalError",
    }
}

/// Turns an [`Error`] into an instance of its exception class, its context passed to the
/// constructor (so that it survives pickling).
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        use pyo3::types::PyDict;
        let errors = py.import("oci_packer.errors")?;
        let kw = PyDict::new(py);
        kw.set_item("kind", e.kind().as_str())?;
        kw.set_item("path", e.path().map(|p| p.display().to_string()))?;
        kw.set_item("reference", e.reference())?;
        kw.set_item("digest", e.digest())?;
        kw.set_item("status", e.http_status())?;
        kw.set_item("code", e.code())?;
        let problems = serde_json::to_string(e.problems()).unwrap_or_else(|_| "[]".into());
        kw.set_item(
            "problems",
            py.import("json")?.call_method1("loads", (problems,))?,
        )?;
        if let Some(p) = e.problems().first() {
            kw.set_item("line", p.line)?;
            kw.set_item("column", p.column)?;
            kw.set_item("field", p.field.clone())?;
        }
        let exc = errors
            .getattr(class_name(&e))?
            .call((e.message(),), Some(&kw))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|err| err)
}

/// The keyword options the Python layer collected, with the CLI's names and defaults.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PyOptions {
    concurrency: Option<usize>,
    tmp_dir: Option<PathBuf>,
    fsync: bool,
    created: Option<String>,
    dry_run: bool,
    platform: Option<String>,
    plain_http: bool,
    insecure: bool,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    registry_config: Option<PathBuf>,
    force: bool,
    unpack: bool,
    images: bool,
    max_bytes: Option<u64>,
    max_entries: Option<u64>,
    no_cache: bool,
}

/// Options from the JSON of the keyword arguments.
fn options(opts: &str) -> PyResult<Options> {
    let o: PyOptions =
        serde_json::from_str(opts).map_err(|e| PyTypeError::new_err(format!("bad option: {e}")))?;
    Ok(Options {
        concurrency: o.concurrency.unwrap_or(oci_packer::DEFAULT_CONCURRENCY),
        tmp_dir: o.tmp_dir,
        fsync: o.fsync,
        created: o.created,
        dry_run: o.dry_run,
        platform: o.platform,
        force: o.force,
        unpack: o.unpack,
        images: o.images,
        max_bytes: o.max_bytes.unwrap_or(oci_packer::DEFAULT_MAX_BYTES),
        max_entries: o.max_entries.unwrap_or(oci_packer::DEFAULT_MAX_ENTRIES),
        registry: RegistryOptions {
            plain_http: o.plain_http,
            insecure: o.insecure,
            ca_file: o.ca_file,
            username: o.username,
            password: o.password,
            config: o.registry_config,
            timeout: None,
            no_cache: o.no_cache,
        },
        ..Options::default()
    })
}

/// The pack as the Python layer normalised it: ("file", path, _) or ("json", text, base_dir).
fn input(kind: &str, value: String, base_dir: Option<PathBuf>) -> PyResult<PackInput> {
    match kind {
        "file" => Ok(PackInput::File(PathBuf::from(value))),
        "json" => Ok(PackInput::Json {
            text: value,
            base_dir: base_dir.unwrap_or_else(|| PathBuf::from(".")),
        }),
        "yaml" => Ok(PackInput::Yaml {
            text: value,
            base_dir: base_dir.unwrap_or_else(|| PathBuf::from(".")),
        }),
        other => Err(PyRuntimeError::new_err(format!(
            "unknown pack kind {other}"
        ))),
    }
}

/// Runs `f` with the GIL released on a helper thread, checking for signals every 50 ms: on
/// Ctrl-C the operation is cancelled and the `KeyboardInterrupt` is raised (what was written
/// stays valid). Errors of the operation become Python exceptions.
fn interruptible<T: Send>(
    py: Python<'_>,
    options: &mut Options,
    f: impl FnOnce(&Options) -> Result<T, Error> + Send,
) -> PyResult<T> {
    install_logging(py);
    let cancel = Cancel::new();
    options.cancel = Some(cancel.clone());
    let options = &*options;
    let mut interrupted: Option<PyErr> = None;
    let outcome = py.detach(|| {
        std::thread::scope(|s| {
            let worker = s.spawn(|| f(options));
            while !worker.is_finished() {
                std::thread::sleep(Duration::from_millis(50));
                if interrupted.is_none() {
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        interrupted = Some(e);
                        cancel.cancel();
                    }
                }
            }
            worker.join()
        })
    });
    if let Some(e) = interrupted {
        return Err(e);
    }
    match outcome {
        Ok(r) => r.map_err(|e| to_py(py, e)),
        Err(_) => Err(PyRuntimeError::new_err(
            "oci-packer panicked; please report it",
        )),
    }
}

/// Calls `callback(event: dict)` for progress events, with the GIL, from worker threads;
/// byte counts are batched to at most one call per blob every 100 ms (the rest is flushed
/// before the blob's last event). The first exception the callback raises is kept and
/// raised when the operation returns.
fn progress(callback: Option<Py<PyAny>>, failed: Arc<Mutex<Option<PyErr>>>) -> Progress {
    let Some(callback) = callback else {
        return Progress::default();
    };
    // Per blob (digest) or source (path): when bytes were last reported, and how many wait.
    let pending: Mutex<HashMap<String, (Option<Instant>, u64)>> = Mutex::new(HashMap::new());
    let batch = move |key: &str, add: u64, drain: bool| -> Option<u64> {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = p.entry(key.to_string()).or_insert((None, 0));
        entry.1 += add;
        let due = entry
            .0
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if drain {
            let n = entry.1;
            p.remove(key);
            return (n > 0).then_some(n);
        }
        if due && entry.1 > 0 {
            let n = entry.1;
            *entry = (Some(Instant::now()), 0);
            return Some(n);
        }
        None
    };
    let emit = move |ev: &ProgressEvent| {
        let Ok(fields) = serde_json::to_string(ev) else {
            return;
        };
        Python::attach(|py| {
            let call = || -> PyResult<()> {
                let d = py.import("json")?.call_method1("loads", (fields,))?;
                callback.call1(py, (d,))?;
                Ok(())
            };
            if let Err(e) = call() {
                failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        })
    };
    // Byte counts are batched per blob or source, so a fast transfer does not take the
    // GIL thousands of times a second; a finished blob or source flushes its batch first.
    Progress::new(move |ev| {
        // The batched count that replaces or precedes `ev`, and whether `ev` itself follows.
        let (batched, then_ev) = match ev {
            ProgressEvent::StageAdvanced { source, bytes } => match batch(source, *bytes, false) {
                Some(n) => (
                    Some(ProgressEvent::StageAdvanced {
                        source: source.clone(),
                        bytes: n,
                    }),
                    false,
                ),
                None => return,
            },
            ProgressEvent::Advanced { digest, bytes } => match batch(digest, *bytes, false) {
                Some(n) => (
                    Some(ProgressEvent::Advanced {
                        digest: digest.clone(),
                        bytes: n,
                    }),
                    false,
                ),
                None => return,
            },
            ProgressEvent::StageFinished { source } => (
                batch(source, 0, true).map(|n| ProgressEvent::StageAdvanced {
                    source: source.clone(),
                    bytes: n,
                }),
                true,
            ),
            ProgressEvent::Finished { digest } => (
                batch(digest, 0, true).map(|n| ProgressEvent::Advanced {
                    digest: digest.clone(),
                    bytes: n,
                }),
                true,
            ),
            _ => (None, true),
        };
        if let Some(b) = &batched {
            emit(b);
        }
        if then_ev {
            emit(ev);
        }
    })
}

/// Raises the first exception of a progress callback, if there was one.
fn callback_error(failed: &Arc<Mutex<Option<PyErr>>>) -> PyResult<()> {
    match failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Packs; returns the root descriptor as JSON (with `reference` and `stats`).
#[pyfunction]
#[pyo3(signature = (kind, value, base_dir, target, opts, progress_cb=None))]
fn pack(
    py: Python<'_>,
    kind: &str,
    value: String,
    base_dir: Option<PathBuf>,
    target: String,
    opts: &str,
    progress_cb: Option<Py<PyAny>>,
) -> PyResult<String> {
    let input = input(kind, value, base_dir)?;
    let mut options = options(opts)?;
    let failed = Arc::new(Mutex::new(None));
    options.progress = progress(progress_cb, failed.clone());
    let packed = interruptible(py, &mut options, move |o| {
        oci_packer::pack(input, &target, o)
    })?;
    callback_error(&failed)?;
    packed.to_json().map_err(|e| to_py(py, e))
}

/// Validates; returns the problems as JSON.
#[pyfunction]
fn validate(
    py: Python<'_>,
    kind: &str,
    value: String,
    base_dir: Option<PathBuf>,
) -> PyResult<String> {
    let input = input(kind, value, base_dir)?;
    let problems = py
        .detach(move || oci_packer::validate(input))
        .map_err(|e| to_py(py, e))?;
    serde_json::to_string(&problems).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// Copies; returns the copied descriptor as JSON.
#[pyfunction]
#[pyo3(signature = (src, dst, opts, progress_cb=None))]
fn copy(
    py: Python<'_>,
    src: String,
    dst: String,
    opts: &str,
    progress_cb: Option<Py<PyAny>>,
) -> PyResult<String> {
    let mut options = options(opts)?;
    let failed = Arc::new(Mutex::new(None));
    options.progress = progress(progress_cb, failed.clone());
    let copied = interruptible(py, &mut options, move |o| oci_packer::copy(&src, &dst, o))?;
    callback_error(&failed)?;
    copied.to_json().map_err(|e| to_py(py, e))
}

/// Lists; returns the listing as JSON.
#[pyfunction]
fn list(py: Python<'_>, reference: String, opts: &str) -> PyResult<String> {
    let mut options = options(opts)?;
    let listing = interruptible(py, &mut options, move |o| oci_packer::list(&reference, o))?;
    oci_packer::json::to_value(&listing)
        .map(|v| v.to_string())
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// Serialises a pack (as JSON text) to YAML text.
/// Runs an operation on `reference` (with the GIL released) and returns its result as JSON.
fn reference_op<T: serde::Serialize + Send>(
    py: Python<'_>,
    reference: &str,
    opts: &str,
    op: impl FnOnce(&str, &Options) -> Result<T, Error> + Send,
) -> PyResult<String> {
    let mut options = options(opts)?;
    let out = interruptible(py, &mut options, |o| op(reference, o))?;
    oci_packer::json::to_value(&out)
        .map(|v| v.to_string())
        .map_err(|e| to_py(py, e))
}

/// `verify`: the verification as JSON.
#[pyfunction]
fn verify(py: Python<'_>, reference: String, opts: &str) -> PyResult<String> {
    reference_op(py, &reference, opts, oci_packer::verify)
}

/// `delete`: what was (or would be) removed, as JSON.
#[pyfunction]
fn delete(py: Python<'_>, reference: String, opts: &str) -> PyResult<String> {
    reference_op(py, &reference, opts, oci_packer::delete)
}

/// `extract`: what was written, as JSON.
#[pyfunction]
fn extract(py: Python<'_>, reference: String, out_dir: PathBuf, opts: &str) -> PyResult<String> {
    reference_op(py, &reference, opts, |r, o| {
        oci_packer::extract(r, &out_dir, o)
    })
}

/// `mount`: what was mounted, as JSON; `spec` is the mount spec as JSON.
#[pyfunction]
fn mount(
    py: Python<'_>,
    reference: String,
    dir: PathBuf,
    spec: &str,
    opts: &str,
) -> PyResult<String> {
    let spec: oci_packer::MountSpec = serde_json::from_str(spec)
        .map_err(|e| PyTypeError::new_err(format!("bad mount spec: {e}")))?;
    reference_op(py, &reference, opts, |r, o| {
        oci_packer::mount(r, &dir, &spec, o)
    })
}

/// `umount`: what was unmounted, as JSON.
#[pyfunction]
fn umount(py: Python<'_>, dir: PathBuf, lazy: bool) -> PyResult<String> {
    let done = py
        .detach(|| oci_packer::umount(&dir, lazy))
        .map_err(|e| to_py(py, e))?;
    oci_packer::json::to_value(&done)
        .map(|v| v.to_string())
        .map_err(|e| to_py(py, e))
}

/// `serve`: serves `upstream` over HTTP until Ctrl-C (then raises `KeyboardInterrupt`, after
/// responses in flight finished). The address it listens on is logged (logger
/// `oci_packer.proxy`, INFO) before it serves.
#[pyfunction]
fn serve(py: Python<'_>, upstream: String, spec: &str, opts: &str) -> PyResult<()> {
    let spec: oci_packer::ServeSpec = serde_json::from_str(spec)
        .map_err(|e| PyTypeError::new_err(format!("bad serve spec: {e}")))?;
    let mut options = options(opts)?;
    interruptible(py, &mut options, |o| oci_packer::serve(&upstream, &spec, o))
}

/// `gc`: what was (or would be) removed, as JSON.
#[pyfunction]
fn gc(py: Python<'_>, reference: String, opts: &str) -> PyResult<String> {
    reference_op(py, &reference, opts, oci_packer::gc)
}

/// `login`: checks the credentials in `opts` against `host` and stores them; returns the
/// config file written.
#[pyfunction]
fn login(py: Python<'_>, host: String, opts: &str) -> PyResult<String> {
    let mut options = options(opts)?;
    interruptible(py, &mut options, |o| {
        oci_packer::login(&host, &o.registry).map(|p| p.display().to_string())
    })
}

/// `logout`: removes the credentials stored for `host`; false when there were none.
#[pyfunction]
fn logout(py: Python<'_>, host: String, opts: &str) -> PyResult<bool> {
    let mut options = options(opts)?;
    interruptible(py, &mut options, |o| oci_packer::logout(&host, &o.registry))
}

#[pyfunction]
fn pack_to_yaml(value: String) -> PyResult<String> {
    let pack: oci_packer::PackFile = serde_json::from_str(&value)
        .map_err(|e| PyRuntimeError::new_err(format!("not a pack: {e}")))?;
    oci_packer::packfile::to_yaml(&pack).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// Runs the `oci-packer` command line with `argv`; returns the exit status.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(move || oci_packer::cli::run(argv))
}

/// The library version.
#[pyfunction]
fn version() -> &'static str {
    oci_packer::VERSION
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(copy, m)?)?;
    m.add_function(wrap_pyfunction!(list, m)?)?;
    m.add_function(wrap_pyfunction!(pack_to_yaml, m)?)?;
    m.add_function(wrap_pyfunction!(login, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(delete, m)?)?;
    m.add_function(wrap_pyfunction!(gc, m)?)?;
    m.add_function(wrap_pyfunction!(extract, m)?)?;
    m.add_function(wrap_pyfunction!(mount, m)?)?;
    m.add_function(wrap_pyfunction!(umount, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(logout, m)?)?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
