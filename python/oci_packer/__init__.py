"""oci-packer: declarative YAML pack files to OCI artifacts in registries and OCI layouts.

>>> import oci_packer
>>> d = oci_packer.pack("examples/pack.yaml", "oci://build/layout:example")  # doctest: +SKIP
>>> d.digest  # doctest: +SKIP
'sha256:…'
"""

from __future__ import annotations

import builtins
import json
import os
from dataclasses import dataclass, field
import warnings
from typing import Any, Callable, Optional, Sequence, TypedDict, Union

from . import _native
from .errors import (
    AuthenticationError,
    CancelledError,
    DigestMismatchError,
    InternalError,
    InvalidArgumentError,
    InvalidReferenceError,
    NetworkError,
    NotFoundError,
    OciIOError,
    OciPackerError,
    PackFileError,
    RegistryError,
    SourceNotFoundError,
    UnsafeContentError,
    UnsupportedError,
)

__version__: str = _native.version()


def __getattr__(name: str) -> Any:
    # `oci_packer.IOError` was the old name of OciIOError; it is not exported by `import *`
    # (it would shadow the builtin).
    if name == "IOError":
        warnings.warn("oci_packer.IOError is deprecated: use oci_packer.OciIOError", DeprecationWarning,
                      stacklevel=2)
        return OciIOError
    raise AttributeError(f"module 'oci_packer' has no attribute {name!r}")


class Stats(TypedDict):
    """What an operation moved: blobs written, already there, mounted; bytes written."""

    stored: int
    skipped: int
    mounted: int
    bytes: int


def _stats(v: dict[str, Any]) -> Stats:
    return Stats(stored=int(v.get("stored", 0)), skipped=int(v.get("skipped", 0)),
                 mounted=int(v.get("mounted", 0)), bytes=int(v.get("bytes", 0)))


class ListEntry(TypedDict, total=False):
    """One entry of a layout, or one tag of a repository (``problem`` only when its graph
    could not be read)."""

    reference: str
    kind: str
    digest: str
    platforms: builtins.list[str]
    artifactType: Optional[str]
    size: int
    problem: str


class TreeNode(TypedDict):
    """One node of an artifact's tree: its OCI descriptor and its children."""

    descriptor: dict[str, Any]
    children: builtins.list["TreeNode"]


class Listing(TypedDict, total=False):
    """What :func:`list` returns: ``kind`` ``"layout"`` (``layout``, ``entries``),
    ``"repository"`` (``repository``, ``entries``) or ``"artifact"`` (``reference``,
    ``tree``)."""

    kind: str
    layout: str
    repository: str
    entries: builtins.list[ListEntry]
    reference: str
    tree: TreeNode

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Descriptor:
    """What `pack` and `copy` return: the OCI descriptor of the root, and where it went."""

    media_type: str
    digest: str
    size: int
    reference: str
    artifact_type: Optional[str] = None
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Optional[dict[str, str]] = None
    stats: Stats = field(default_factory=lambda: Stats(stored=0, skipped=0, mounted=0, bytes=0), repr=False,
                         compare=False)

    @classmethod
    def _from_json(cls, text: str) -> "Descriptor":
        v = json.loads(text)
        return cls(
            media_type=v["mediaType"],
            digest=v["digest"],
            size=v["size"],
            reference=v["reference"],
            artifact_type=v.get("artifactType"),
            annotations=v.get("annotations") or {},
            platform=v.get("platform"),
            stats=_stats(v.get("stats") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """The OCI descriptor as a dict, with the OCI field names."""
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform:
            d["platform"] = dict(self.platform)
        return d


@dataclass(frozen=True)
class Problem:
    """One problem of an invalid pack file."""

    message: str
    field: str = ""
    line: int = 0
    column: int = 0
    file: Optional[str] = None

    def __str__(self) -> str:
        where = ":".join(str(x) for x in (self.file, self.line or None, self.column or None) if x)
        return " ".join(x for x in (where + ":" if where else "", self.field + ":" if self.field else "", self.message) if x)


class Pack:
    """A pack file in memory: load it, check it, write it back as YAML, or pack it."""

    def __init__(self, data: dict[str, Any], base_dir: Optional[PathLike] = None, *, _yaml: Optional[str] = None,
                 _file: Optional[str] = None) -> None:
        self.data = data
        self.base_dir = os.fspath(base_dir) if base_dir is not None else os.getcwd()
        self._yaml = _yaml
        self._file = _file

    @classmethod
    def from_yaml(cls, path: PathLike) -> "Pack":
        """Reads a pack file; relative paths resolve against its directory."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return cls({}, os.path.dirname(os.path.abspath(path)), _yaml=text, _file=path)

    @classmethod
    def from_str(cls, text: str, base_dir: Optional[PathLike] = None) -> "Pack":
        """A pack from YAML text; relative paths resolve against ``base_dir`` (default: cwd)."""
        return cls({}, base_dir, _yaml=text)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Optional[PathLike] = None) -> "Pack":
        """A pack from a dict with the pack file's keys."""
        return cls(dict(data), base_dir)

    def _input(self) -> tuple[str, str, Optional[str]]:
        if self._file is not None:
            return "file", self._file, None
        if self._yaml is not None:
            return "yaml", self._yaml, self.base_dir
        return "json", json.dumps(self.data), self.base_dir

    def validate(self) -> builtins.list[Problem]:
        """Every problem of the pack (empty when valid). Reads no source."""
        return validate(self)

    def to_yaml(self) -> str:
        """The pack as YAML text (a dict pack; a YAML pack is returned as it was written)."""
        if self._yaml is not None:
            return self._yaml
        return str(_native.pack_to_yaml(json.dumps(self.data)))

    def __repr__(self) -> str:
        src = self._file or ("<yaml>" if self._yaml is not None else "<dict>")
        return f"Pack({src}, base_dir={self.base_dir!r})"


PackLike = Union[PathLike, Pack, dict[str, Any]]


def _input(pack: PackLike, base_dir: Optional[PathLike] = None) -> tuple[str, str, Optional[str]]:
    if isinstance(pack, Pack):
        return pack._input()
    if isinstance(pack, dict):
        return Pack.from_dict(pack, base_dir)._input()
    return "file", os.fspath(pack), None


def _options(**kw: Any) -> str:
    return json.dumps({k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in kw.items() if v is not None})


def pack(
    pack: PackLike,
    target: str,
    *,
    base_dir: Optional[PathLike] = None,
    concurrency: int = 8,
    tmp_dir: Optional[PathLike] = None,
    fsync: bool = False,
    created: Optional[str] = None,
    dry_run: bool = False,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    registry_config: Optional[PathLike] = None,
    progress: Optional[Callable[[dict[str, Any]], None]] = None,
    unpack: bool = False,
    max_bytes: Optional[int] = None,
    max_entries: Optional[int] = None,
    no_cache: bool = False,
) -> Descriptor:
    """Builds the artifact described by ``pack`` (a path, a :class:`Pack` or a dict) and
    writes it to ``target`` (``host/repo:tag`` or ``oci://DIR:REF``). Returns the root.

    The GIL is released while it works; Ctrl-C cancels it (what was written stays valid).
    ``progress`` is called with event dicts (``event``: ``stage_started``,
    ``stage_advanced``, ``stage_finished``, ``started``, ``advanced``, ``finished``,
    ``skipped``, ``mounted``; with ``digest``/``source``, ``title``, ``size``, ``bytes``).
    ``unpack`` (layouts only) also extracts every tar layer into ``DIR/unpacked/sha256/<hex>/``,
    each at most ``max_bytes`` (default 64 GiB) and ``max_entries`` (default 1,000,000).
    ``no_cache`` reads and writes none of the user's caches (downloads, digests, where
    registries hold blobs), as ``--no-cache`` does."""
    kind, value, base = _input(pack, base_dir)
    opts = _options(concurrency=concurrency, tmp_dir=tmp_dir, fsync=fsync, created=created, dry_run=dry_run,
                    plain_http=plain_http, insecure=insecure, ca_file=ca_file, username=username,
                    password=password, registry_config=registry_config, unpack=unpack, max_bytes=max_bytes,
                    max_entries=max_entries, no_cache=no_cache)
    return Descriptor._from_json(_native.pack(kind, value, base, target, opts, progress))


def validate(pack: PackLike, *, base_dir: Optional[PathLike] = None) -> builtins.list[Problem]:
    """Every problem of a pack (empty when valid); reads no source."""
    kind, value, base = _input(pack, base_dir)
    return [Problem(**p) for p in json.loads(_native.validate(kind, value, base))]


def copy(
    src: str,
    dst: str,
    *,
    platform: Optional[str] = None,
    concurrency: int = 8,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    registry_config: Optional[PathLike] = None,
    progress: Optional[Callable[[dict[str, Any]], None]] = None,
    unpack: bool = False,
    max_bytes: Optional[int] = None,
    max_entries: Optional[int] = None,
    no_cache: bool = False,
) -> Descriptor:
    """Copies an artifact between registries and layouts (any direction); with ``platform``
    only the best-matching member of an index. ``progress``, ``unpack``, the limits and
    ``no_cache`` as for :func:`pack`."""
    opts = _options(platform=platform, concurrency=concurrency, plain_http=plain_http, insecure=insecure,
                    ca_file=ca_file, username=username, password=password, registry_config=registry_config,
                    unpack=unpack, max_bytes=max_bytes, max_entries=max_entries, no_cache=no_cache)
    return Descriptor._from_json(_native.copy(src, dst, opts, progress))


def list(  # noqa: A001 - the CLI's name
    reference: str,
    *,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    registry_config: Optional[PathLike] = None,
) -> Listing:
    """A layout's entries, a repository's tags, or one artifact's tree (see :class:`Listing`)."""
    result: Listing = _read(_native.list, reference, plain_http, insecure, ca_file, username, password,
                            registry_config)
    return result


def _read(op: Callable[[str, str], str], reference: str, plain_http: bool, insecure: bool,
          ca_file: Optional[PathLike], username: Optional[str], password: Optional[str],
          registry_config: Optional[PathLike]) -> Any:
    """Runs a read-only operation on ``reference`` and decodes its JSON."""
    opts = _options(plain_http=plain_http, insecure=insecure, ca_file=ca_file, username=username,
                    password=password, registry_config=registry_config)
    return json.loads(op(reference, opts))


class BlobProblem(TypedDict):
    """One blob of a graph that is not what its descriptor says: ``kind`` is ``missing``,
    ``size mismatch``, ``digest mismatch`` or ``unreadable``; ``path`` the digests from the
    root down to its parent."""

    kind: str
    digest: str
    path: builtins.list[str]
    message: str


class Verification(TypedDict):
    """What :func:`verify` found."""

    reference: str
    digest: str
    blobs: int
    bytes: int
    problems: builtins.list[BlobProblem]


def verify(
    reference: str,
    *,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    registry_config: Optional[PathLike] = None,
) -> Verification:
    """Hashes every blob of an artifact's graph again (a layout or registry reference). The
    problems are in the result; an exception means the artifact could not be found or read."""
    result: Verification = _read(_native.verify, reference, plain_http, insecure, ca_file, username, password,
                                 registry_config)
    return result


class RemovedBlob(TypedDict):
    """A blob a collection removed."""

    digest: str
    size: int


class Deleted(TypedDict):
    """What :func:`delete` or :func:`gc` did (with ``dry_run``: would do)."""

    reference: str
    dryRun: bool
    untagged: builtins.list[str]
    manifest: Optional[str]
    removed: builtins.list[RemovedBlob]
    bytes: int
    tempFiles: int
    unpacked: builtins.list[str]


def delete(
    reference: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    registry_config: Optional[PathLike] = None,
) -> Deleted:
    """Deletes a layout entry (``oci://DIR:REF``) and every blob no remaining entry reaches,
    or a registry manifest with every tag on it (``force=True``); ``dry_run`` changes
    nothing and says what would go."""
    opts = _options(dry_run=dry_run, force=force, plain_http=plain_http, insecure=insecure, ca_file=ca_file,
                    username=username, password=password, registry_config=registry_config)
    result: Deleted = json.loads(_native.delete(reference, opts))
    return result


def gc(reference: str, *, dry_run: bool = False) -> Deleted:
    """Removes the blobs no entry of a layout (``oci://DIR``) uses, and this program's temp
    files older than an hour."""
    result: Deleted = json.loads(_native.gc(reference, _options(dry_run=dry_run)))
    return result


class Extracted(TypedDict):
    """What :func:`extract` wrote. Pack ``packFile`` again (with ``SOURCE_DATE_EPOCH`` set
    to ``sourceDateEpoch`` when it is not None) for the same digest; ``notes`` say what
    cannot be reproduced exactly (empty for everything oci-packer wrote)."""

    reference: str
    digest: str
    outDir: str
    packFile: str
    files: int
    bytes: int
    sourceDateEpoch: Optional[int]
    command: str
    images: builtins.list[str]
    notes: builtins.list[str]


def extract(
    reference: str,
    out_dir: PathLike,
    *,
    platform: Optional[str] = None,
    unpack: bool = False,
    images: bool = False,
    force: bool = False,
    max_bytes: Optional[int] = None,
    max_entries: Optional[int] = None,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    registry_config: Optional[PathLike] = None,
) -> Extracted:
    """Writes an artifact (a layout or registry reference) as files in ``out_dir`` — missing
    or empty unless ``force`` — with a ``pack.yaml`` that packs them again to the same root
    digest. ``platform`` picks one member of an index; ``unpack`` extracts archive layers
    other programs made into directories; ``images`` copies image members into
    ``out_dir/images`` so the pack file packs offline. A title or archive entry that would
    land outside ``out_dir`` raises :class:`UnsafeContentError` before anything is left
    written; archives are capped at ``max_bytes`` and ``max_entries``."""
    opts = _options(platform=platform, unpack=unpack, images=images, force=force, max_bytes=max_bytes,
                    max_entries=max_entries, plain_http=plain_http, insecure=insecure, ca_file=ca_file,
                    username=username, password=password, registry_config=registry_config)
    result: Extracted = json.loads(_native.extract(reference, os.fspath(out_dir), opts))
    return result


class Mounted(TypedDict):
    """What :func:`mount` did: the image manifest mounted, its layer directories (bottom
    first), every mount point (the overlay first), or with ``persistent`` the unit files."""

    reference: str
    digest: str
    dir: str
    layers: builtins.list[str]
    mounts: builtins.list[str]
    units: builtins.list[str]


class Unmounted(TypedDict):
    """What :func:`umount` did: the mount points unmounted, deepest first."""

    dir: str
    unmounted: builtins.list[str]


def mount(
    reference: str,
    dir: PathLike,
    *,
    platform: Optional[str] = None,
    suid: bool = False,
    dev: bool = False,
    binds: Sequence[str] = (),
    tmpfs: Sequence[str] = (),
    no_tmpfs: bool = False,
    verify: bool = False,
    persistent: bool = False,
    unit_dir: Optional[PathLike] = None,
    enable: bool = False,
) -> Mounted:
    """Mounts an image of a layout (``oci://DIR:REF``) as a read-only overlayfs at ``dir``
    (Linux, root): an index's member for this machine (or ``platform``), layers unpacked on
    demand, ``nosuid,nodev`` unless ``suid``/``dev``; ``binds`` (``HOST:PATH``) and ``tmpfs``
    (``PATH[:SIZE]``; ``/tmp``, ``/run``, ``/var/tmp`` by default unless ``no_tmpfs``) inside
    it; with ``persistent``, systemd units in ``unit_dir`` instead. Not root raises
    :class:`UnsupportedError`; a target leaving the image :class:`UnsafeContentError`."""
    spec = {"suid": suid, "dev": dev, "binds": builtins.list(binds), "tmpfs": builtins.list(tmpfs),
            "noTmpfs": no_tmpfs, "verify": verify, "persistent": persistent, "enable": enable}
    if unit_dir is not None:
        spec["unitDir"] = os.fspath(unit_dir)
    result: Mounted = json.loads(_native.mount(reference, os.fspath(dir), json.dumps(spec),
                                               _options(platform=platform)))
    return result


def umount(dir: PathLike, *, lazy: bool = False) -> Unmounted:
    """Unmounts everything mounted at and below ``dir``, deepest first (``lazy``: detach)."""
    result: Unmounted = json.loads(_native.umount(os.fspath(dir), lazy))
    return result


def serve(
    upstream: str,
    *,
    addr: str = "127.0.0.1:8080",
    tag_ttl: int = 30,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    registry_config: Optional[PathLike] = None,
) -> None:
    """Serves the files (titled layers) of the artifacts of ``upstream`` — a registry host
    (``host[:port]``) or a layout (``oci://DIR``) — over HTTP on ``addr`` (``IP:PORT``; port 0
    picks one, logged by the ``oci_packer.proxy`` logger at INFO), read-only:
    ``GET /REPO/REF?title=T``, ``/REPO/REF/files/T``, ``/REPO/REF/files/`` (a JSON listing).
    A tag's answer is kept ``tag_ttl`` seconds. Blocks until Ctrl-C, which lets responses in
    flight finish (at most 10 s) and raises ``KeyboardInterrupt``. A bad upstream or address
    raises :class:`InvalidArgumentError`; an address in use :class:`OciIOError`."""
    spec = {"addr": addr, "tagTtl": tag_ttl}
    opts = _options(plain_http=plain_http, insecure=insecure, ca_file=ca_file, username=username,
                    password=password, registry_config=registry_config)
    _native.serve(upstream, json.dumps(spec), opts)


def login(
    host: str,
    username: str,
    password: str,
    *,
    plain_http: bool = False,
    insecure: bool = False,
    ca_file: Optional[PathLike] = None,
    registry_config: Optional[PathLike] = None,
) -> str:
    """Checks ``username``/``password`` against the registry ``host`` and stores them in the
    Docker config (``registry_config``, else the default one), as ``oci-packer login`` does.
    Returns the config file written; raises :class:`AuthenticationError` when refused."""
    opts = _options(plain_http=plain_http, insecure=insecure, ca_file=ca_file, username=username,
                    password=password, registry_config=registry_config)
    return str(_native.login(host, opts))


def logout(host: str, *, registry_config: Optional[PathLike] = None) -> bool:
    """Removes the credentials stored for ``host`` from the Docker config; False when there
    were none."""
    return bool(_native.logout(host, _options(registry_config=registry_config)))


__all__ = [
    "AuthenticationError",
    "BlobProblem",
    "CancelledError",
    "Deleted",
    "Descriptor",
    "DigestMismatchError",
    "Extracted",
    "Mounted",
    "InternalError",
    "InvalidArgumentError",
    "InvalidReferenceError",
    "NetworkError",
    "ListEntry",
    "Listing",
    "NotFoundError",
    "OciIOError",
    "OciPackerError",
    "Pack",
    "PackFileError",
    "Problem",
    "RemovedBlob",
    "RegistryError",
    "SourceNotFoundError",
    "Stats",
    "TreeNode",
    "UnsafeContentError",
    "Unmounted",
    "UnsupportedError",
    "Verification",
    "__version__",
    "copy",
    "delete",
    "extract",
    "gc",
    "list",
    "login",
    "logout",
    "mount",
    "pack",
    "serve",
    "umount",
    "validate",
    "verify",
]
