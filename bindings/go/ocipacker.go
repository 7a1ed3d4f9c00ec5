// Package ocipacker is the Go interface to oci-packer: pack declarative YAML pack files into
// OCI artifacts in registries and OCI image layouts, copy and list them.
//
// It calls the C library of oci-packer, found with pkg-config (package oci_packer): install
// it once with `scripts/install-c PREFIX` from a checkout of oci-packer (the release build,
// its header and oci_packer.pc), and point PKG_CONFIG_PATH at PREFIX/lib/pkgconfig when
// PREFIX is not a system one. See docs/go.md.
//
// Every call blocks until the operation ends; calls may run concurrently from several
// goroutines. The ...Context variants stop the operation when the context is done and
// return an error for which errors.Is(err, context.Canceled) (or DeadlineExceeded) holds.
package ocipacker

/*
#cgo pkg-config: oci_packer
#include <stdlib.h>
#include "oci_packer.h"

extern void goProgress(oci_packer_progress *event, void *user_data);

static void progress_trampoline(const oci_packer_progress *event, void *user_data) {
	goProgress((oci_packer_progress *)event, user_data);
}

static oci_packer_status set_progress(oci_packer_options *o, uintptr_t handle) {
	return oci_packer_options_set_progress(o, progress_trampoline, (void *)handle, NULL);
}
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Code is a status code of the C API; its values never change meaning.
type Code uint32

// The error codes (C: OCI_PACKER_STATUS_*).
const (
	CodePackFile         Code = 1
	CodeInvalidReference Code = 2
	CodeSourceNotFound   Code = 3
	CodeAuthentication   Code = 4
	CodeNotFound         Code = 5
	CodeDigestMismatch   Code = 6
	CodeRegistry         Code = 7
	CodeNetwork          Code = 8
	CodeIO               Code = 9
	CodeUnsupported      Code = 10
	CodeCancelled        Code = 11
	CodeInvalidArgument  Code = 12
	CodeInternal         Code = 13
	CodeUnsafeContent    Code = 14
	CodeNullArgument     Code = 100
	CodeInvalidUTF8      Code = 101
	CodePanic            Code = 102
)

// Sentinels for errors.Is: errors.Is(err, ocipacker.ErrNotFound).
var (
	ErrPackFile         = errors.New("invalid pack file")
	ErrInvalidReference = errors.New("invalid reference")
	ErrSourceNotFound   = errors.New("source not found")
	ErrAuth             = errors.New("authentication required or refused")
	ErrNotFound         = errors.New("not found")
	ErrDigestMismatch   = errors.New("digest mismatch")
	ErrRegistry         = errors.New("registry error")
	ErrNetwork          = errors.New("network error")
	ErrIO               = errors.New("i/o error")
	ErrUnsupported      = errors.New("unsupported")
	ErrCancelled        = errors.New("cancelled")
	ErrInvalidArgument  = errors.New("invalid argument")
	ErrInternal         = errors.New("internal error")
	ErrUnsafeContent    = errors.New("unsafe content")
)

var sentinels = map[Code]error{
	CodePackFile: ErrPackFile, CodeInvalidReference: ErrInvalidReference, CodeSourceNotFound: ErrSourceNotFound,
	CodeAuthentication: ErrAuth, CodeNotFound: ErrNotFound, CodeDigestMismatch: ErrDigestMismatch,
	CodeRegistry: ErrRegistry, CodeNetwork: ErrNetwork, CodeIO: ErrIO, CodeUnsupported: ErrUnsupported,
	CodeCancelled: ErrCancelled, CodeInvalidArgument: ErrInvalidArgument, CodeNullArgument: ErrInvalidArgument,
	CodeInvalidUTF8: ErrInvalidArgument, CodeInternal: ErrInternal, CodePanic: ErrInternal,
	CodeUnsafeContent: ErrUnsafeContent,
}

// Error is an error of the library: a code, a message naming the thing, and what it is
// about when known.
type Error struct {
	code    Code
	message string
	// HTTPStatus is the status of the registry answer the error is about (0 when none).
	HTTPStatus int
	// RegistryCode is the registry's error code ("UNAUTHORIZED", "MANIFEST_UNKNOWN", …).
	RegistryCode string
	// Path is the file or directory the error is about.
	Path string
	// Reference is the target, source or image the error is about.
	Reference string
	// Digest is the digest the error is about ("sha256:…").
	Digest string
	// cause is why the operation stopped when the caller stopped it: the context's error,
	// or a panic of a progress callback.
	cause error
}

// Code says what kind of error it is.
func (e *Error) Code() Code { return e.code }

func (e *Error) Error() string { return e.message }

// Unwrap gives the sentinel of the error's kind and, for a cancelled call, the context's
// error (context.Canceled, context.DeadlineExceeded), for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	out := []error{sentinels[e.code]}
	if e.cause != nil {
		out = append(out, e.cause)
	}
	return out
}

// takeError copies and frees a C error object.
func takeError(status C.oci_packer_status, cerr *C.oci_packer_error) error {
	if status == 0 {
		return nil
	}
	e := &Error{code: Code(status), message: fmt.Sprintf("oci-packer status %d", status)}
	if cerr != nil {
		str := func(p *C.char) string {
			if p == nil {
				return ""
			}
			return C.GoString(p)
		}
		e.message = str(C.oci_packer_error_message(cerr))
		e.HTTPStatus = int(C.oci_packer_error_http_status(cerr))
		e.RegistryCode = str(C.oci_packer_error_registry_code(cerr))
		e.Path = str(C.oci_packer_error_path(cerr))
		e.Reference = str(C.oci_packer_error_reference(cerr))
		e.Digest = str(C.oci_packer_error_digest(cerr))
		C.oci_packer_error_free(cerr)
	}
	return e
}

// ProgressEvent is one progress event; see the C header for the fields.
type ProgressEvent struct {
	Event  string
	Digest string
	Title  string
	Source string
	Size   uint64
	Bytes  uint64
}

// Option sets an option of an operation (the CLI's names and defaults).
type Option func(*options)

type options struct {
	concurrency                                                           uint32
	tmpDir, created, platform, caFile, username, password, registryConfig string
	fsync, dryRun, plainHTTP, insecure, force, unpack, images, noCache    bool
	maxBytes, maxEntries                                                  uint64
	progress                                                              func(ProgressEvent)
}

// WithConcurrency sets -j (default 8).
func WithConcurrency(n uint32) Option { return func(o *options) { o.concurrency = n } }

// WithTmpDir sets --tmp-dir.
func WithTmpDir(dir string) Option { return func(o *options) { o.tmpDir = dir } }

// WithCreated sets --created ("now" or RFC 3339).
func WithCreated(t string) Option { return func(o *options) { o.created = t } }

// WithPlatform picks one member of an index in Copy.
func WithPlatform(p string) Option { return func(o *options) { o.platform = p } }

// WithFsync sets --fsync.
func WithFsync() Option { return func(o *options) { o.fsync = true } }

// WithDryRun sets --dry-run.
func WithDryRun() Option { return func(o *options) { o.dryRun = true } }

// WithForce lets Delete delete a registry manifest (every tag on it goes too).
func WithForce() Option { return func(o *options) { o.force = true } }

// WithUnpack makes Extract write archive layers other programs made as directories, and
// Copy or Pack into a layout also extract every tar layer into DIR/unpacked/sha256/<hex>/.
func WithUnpack() Option { return func(o *options) { o.unpack = true } }

// WithImages makes Extract copy image members into OUTDIR/images/.
func WithImages() Option { return func(o *options) { o.images = true } }

// WithLimits caps what one archive layer may extract to (bytes) and hold (entries); 0
// keeps a default (64 GiB, 1,000,000).
func WithLimits(maxBytes, maxEntries uint64) Option {
	return func(o *options) { o.maxBytes, o.maxEntries = maxBytes, maxEntries }
}

// WithNoCache reads and writes none of the user's caches (downloads, digests, where
// registries hold blobs), as --no-cache does.
func WithNoCache() Option { return func(o *options) { o.noCache = true } }

// WithPlainHTTP talks plain HTTP to registries.
func WithPlainHTTP() Option { return func(o *options) { o.plainHTTP = true } }

// WithInsecure skips TLS verification.
func WithInsecure() Option { return func(o *options) { o.insecure = true } }

// WithCAFile trusts a PEM CA certificate.
func WithCAFile(path string) Option { return func(o *options) { o.caFile = path } }

// WithCredentials sets the registry user name and password.
func WithCredentials(user, password string) Option {
	return func(o *options) { o.username, o.password = user, password }
}

// WithRegistryConfig sets the Docker config file with credentials.
func WithRegistryConfig(path string) Option { return func(o *options) { o.registryConfig = path } }

// WithProgress calls f for progress events, from threads of the library, possibly several
// at once. A panic in f stops the operation, which then returns an error saying so.
func WithProgress(f func(ProgressEvent)) Option { return func(o *options) { o.progress = f } }

// call is one running operation: its C options, its cancel handle, and why the caller's
// side stopped it (a panic in the progress callback).
type call struct {
	co       *C.oci_packer_options
	cancel   *C.oci_packer_cancel
	progress func(ProgressEvent)
	id       uintptr
	mu       sync.Mutex
	panicked error
}

// calls are the operations running with a progress callback, by the id passed to C as its
// user data (no Go pointer goes to C); an event for an id no longer here is dropped.
var (
	calls    sync.Map
	nextCall atomic.Uintptr
)

//export goProgress
func goProgress(event *C.oci_packer_progress, userData unsafe.Pointer) {
	v, ok := calls.Load(uintptr(userData))
	if !ok {
		return
	}
	c := v.(*call)
	defer func() {
		// A panic must not unwind into the library's thread: it stops the operation and
		// becomes its error.
		if r := recover(); r != nil {
			c.mu.Lock()
			if c.panicked == nil {
				c.panicked = fmt.Errorf("progress callback panicked: %v", r)
			}
			c.mu.Unlock()
			C.oci_packer_cancel_fire(c.cancel)
		}
	}()
	str := func(p *C.char) string {
		if p == nil {
			return ""
		}
		return C.GoString(p)
	}
	c.progress(ProgressEvent{
		Event: str(event.event), Digest: str(event.digest), Title: str(event.title), Source: str(event.source),
		Size: uint64(event.size), Bytes: uint64(event.bytes),
	})
}

// newCall builds the C options of one operation, with a cancel handle.
func newCall(opts []Option) (*call, error) {
	o := options{concurrency: 8}
	for _, f := range opts {
		f(&o)
	}
	c := &call{co: C.oci_packer_options_new(), cancel: C.oci_packer_cancel_new(), progress: o.progress}
	var cerr *C.oci_packer_error
	check := func(st C.oci_packer_status) error { return takeError(st, cerr) }
	if err := check(C.oci_packer_options_set_concurrency(c.co, C.uint32_t(o.concurrency), &cerr)); err != nil {
		c.free()
		return nil, err
	}
	setters := []struct {
		value string
		set   func(*C.oci_packer_options, *C.char, **C.oci_packer_error) C.oci_packer_status
	}{
		{o.tmpDir, func(a *C.oci_packer_options, b *C.char, e **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_tmp_dir(a, b, e)
		}},
		{o.created, func(a *C.oci_packer_options, b *C.char, e **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_created(a, b, e)
		}},
		{o.platform, func(a *C.oci_packer_options, b *C.char, e **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_platform(a, b, e)
		}},
		{o.caFile, func(a *C.oci_packer_options, b *C.char, e **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_ca_file(a, b, e)
		}},
		{o.username, func(a *C.oci_packer_options, b *C.char, e **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_username(a, b, e)
		}},
		{o.password, func(a *C.oci_packer_options, b *C.char, e **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_password(a, b, e)
		}},
		{o.registryConfig, func(a *C.oci_packer_options, b *C.char, e **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_registry_config(a, b, e)
		}},
	}
	for _, s := range setters {
		if s.value == "" {
			continue
		}
		cs := C.CString(s.value)
		err := check(s.set(c.co, cs, &cerr))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			c.free()
			return nil, err
		}
	}
	C.oci_packer_options_set_fsync(c.co, C.bool(o.fsync), nil)
	C.oci_packer_options_set_dry_run(c.co, C.bool(o.dryRun), nil)
	C.oci_packer_options_set_plain_http(c.co, C.bool(o.plainHTTP), nil)
	C.oci_packer_options_set_insecure(c.co, C.bool(o.insecure), nil)
	C.oci_packer_options_set_no_cache(c.co, C.bool(o.noCache), nil)
	C.oci_packer_options_set_force(c.co, C.bool(o.force), nil)
	C.oci_packer_options_set_unpack(c.co, C.bool(o.unpack), nil)
	C.oci_packer_options_set_images(c.co, C.bool(o.images), nil)
	C.oci_packer_options_set_limits(c.co, C.uint64_t(o.maxBytes), C.uint64_t(o.maxEntries), nil)
	C.oci_packer_options_set_cancel(c.co, c.cancel, nil)
	if o.progress != nil {
		c.id = nextCall.Add(1)
		calls.Store(c.id, c)
		C.set_progress(c.co, C.uintptr_t(c.id))
	}
	return c, nil
}

func (c *call) free() {
	C.oci_packer_options_free(c.co)
	C.oci_packer_cancel_free(c.cancel)
	if c.id != 0 {
		calls.Delete(c.id)
	}
}

// run runs op (which calls the C function) while watching ctx: when ctx is done first, the
// cancel handle fires, and the returned error carries ctx's error; a panic of the progress
// callback becomes the error too.
func (c *call) run(ctx context.Context, op func() error) error {
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
			C.oci_packer_cancel_fire(c.cancel)
		case <-done:
		}
	}()
	err := op()
	close(done)
	<-watched
	var e *Error
	if err != nil && errors.As(err, &e) && e.code == CodeCancelled {
		c.mu.Lock()
		panicked := c.panicked
		c.mu.Unlock()
		switch {
		case panicked != nil:
			e.code, e.message, e.cause = CodeInternal, panicked.Error(), panicked
		case ctx.Err() != nil:
			e.cause = ctx.Err()
		}
	}
	return err
}

// Platform is an OCI platform, os.version and os.features included.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
	Features     []string `json:"features,omitempty"`
}

// Stats counts what an operation moved: blobs written, blobs already there, blobs mounted
// from another repository of the registry, and the bytes written.
type Stats struct {
	Stored  int64 `json:"stored"`
	Skipped int64 `json:"skipped"`
	Mounted int64 `json:"mounted"`
	Bytes   int64 `json:"bytes"`
}

// Descriptor is what Pack and Copy return: the OCI descriptor of the root, and where it went.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	Reference    string            `json:"reference"`
	Stats        Stats             `json:"stats"`
}

// Problem is one problem of an invalid pack file.
type Problem struct {
	File    *string `json:"file"`
	Line    int     `json:"line"`
	Column  int     `json:"column"`
	Field   string  `json:"field"`
	Message string  `json:"message"`
}

// ListEntry is one entry of a layout or one tag of a repository.
type ListEntry struct {
	// Reference is the entry's name (empty when untagged) or the tag.
	Reference string `json:"reference"`
	// Kind is "index" or "manifest".
	Kind   string `json:"kind"`
	Digest string `json:"digest"`
	// Platforms are the manifest's own, or the members' of an index ("linux/amd64").
	Platforms    []string `json:"platforms"`
	ArtifactType string   `json:"artifactType,omitempty"`
	// Size is the bytes of every distinct blob of the entry's graph.
	Size int64 `json:"size"`
	// Problem says why the entry's graph could not be read (the listing goes on).
	Problem string `json:"problem,omitempty"`
}

// TreeDescriptor is an OCI descriptor in an artifact's tree.
type TreeDescriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
}

// TreeNode is one node of an artifact's tree: its descriptor and its children (config,
// layers, members, subject) in document order.
type TreeNode struct {
	Descriptor TreeDescriptor `json:"descriptor"`
	Children   []TreeNode     `json:"children"`
}

// Listing is what List returns: Kind "layout" (Layout and Entries), "repository"
// (Repository and Entries) or "artifact" (Reference and Tree).
type Listing struct {
	Kind       string      `json:"kind"`
	Layout     string      `json:"layout,omitempty"`
	Repository string      `json:"repository,omitempty"`
	Entries    []ListEntry `json:"entries,omitempty"`
	Reference  string      `json:"reference,omitempty"`
	Tree       *TreeNode   `json:"tree,omitempty"`
}

func result(status C.oci_packer_status, out *C.char, cerr *C.oci_packer_error, v any) error {
	if err := takeError(status, cerr); err != nil {
		return err
	}
	defer C.oci_packer_string_free(out)
	return json.Unmarshal([]byte(C.GoString(out)), v)
}

// cstrings converts Go strings for one C call; the returned func frees them.
func cstrings(s ...string) ([]*C.char, func()) {
	out := make([]*C.char, len(s))
	for i, v := range s {
		out[i] = C.CString(v)
	}
	return out, func() {
		for _, p := range out {
			C.free(unsafe.Pointer(p))
		}
	}
}

// withCall runs one operation with options opts under ctx, decoding its JSON result into v.
func withCall(ctx context.Context, opts []Option, v any,
	op func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status) error {
	if err := ctx.Err(); err != nil {
		return &Error{code: CodeCancelled, message: "cancelled before it started: " + err.Error(), cause: err}
	}
	c, err := newCall(opts)
	if err != nil {
		return err
	}
	defer c.free()
	return c.run(ctx, func() error {
		var out *C.char
		var cerr *C.oci_packer_error
		return result(op(c.co, &out, &cerr), out, cerr, v)
	})
}

// Pack builds the artifact described by the pack file and writes it to target
// ("host/repo:tag" or "oci://DIR:REF").
func Pack(packFile, target string, opts ...Option) (Descriptor, error) {
	return PackContext(context.Background(), packFile, target, opts...)
}

// PackContext is Pack, stopped when ctx is done (no tag is written then).
func PackContext(ctx context.Context, packFile, target string, opts ...Option) (Descriptor, error) {
	s, free := cstrings(packFile, target)
	defer free()
	return describe(ctx, opts, func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_pack_file(s[0], s[1], co, out, cerr)
	})
}

// PackYAML packs pack-file YAML text (relative paths against baseDir) into target.
func PackYAML(yaml, baseDir, target string, opts ...Option) (Descriptor, error) {
	return PackYAMLContext(context.Background(), yaml, baseDir, target, opts...)
}

// PackYAMLContext is PackYAML, stopped when ctx is done.
func PackYAMLContext(ctx context.Context, yaml, baseDir, target string, opts ...Option) (Descriptor, error) {
	s, free := cstrings(yaml, baseDir, target)
	defer free()
	return describe(ctx, opts, func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_pack_yaml(s[0], s[1], s[2], co, out, cerr)
	})
}

// Validate returns every problem of a pack file (none when it is valid).
func Validate(packFile string) ([]Problem, error) {
	s, free := cstrings(packFile)
	defer free()
	return problemsOf(func(out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_validate_file(s[0], out, cerr)
	})
}

// ValidateYAML returns every problem of pack-file YAML text (relative paths against baseDir).
func ValidateYAML(yaml, baseDir string) ([]Problem, error) {
	s, free := cstrings(yaml, baseDir)
	defer free()
	return problemsOf(func(out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_validate_yaml(s[0], s[1], out, cerr)
	})
}

// problemsOf runs one validation and decodes its problems.
func problemsOf(op func(out **C.char, cerr **C.oci_packer_error) C.oci_packer_status) ([]Problem, error) {
	var out *C.char
	var cerr *C.oci_packer_error
	problems := []Problem{}
	err := result(op(&out, &cerr), out, cerr, &problems)
	return problems, err
}

// describe runs one operation that returns a descriptor.
func describe(ctx context.Context, opts []Option, op cOperation) (Descriptor, error) {
	return typedCall[Descriptor](ctx, opts, op)
}

// cOperation calls one C operation with the call's options.
type cOperation = func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status

// typedCall runs one operation and decodes its JSON result into a T.
func typedCall[T any](ctx context.Context, opts []Option, op cOperation) (T, error) {
	var v T
	err := withCall(ctx, opts, &v, op)
	return v, err
}

// onReference runs a C operation that takes one reference.
func onReference[T any](ctx context.Context, reference string, opts []Option,
	op func(ref *C.char, co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status) (T, error) {
	s, free := cstrings(reference)
	defer free()
	return typedCall[T](ctx, opts, func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return op(s[0], co, out, cerr)
	})
}

// Copy copies an artifact between registries and layouts, in any direction.
func Copy(src, dst string, opts ...Option) (Descriptor, error) {
	return CopyContext(context.Background(), src, dst, opts...)
}

// CopyContext is Copy, stopped when ctx is done (no tag is written then).
func CopyContext(ctx context.Context, src, dst string, opts ...Option) (Descriptor, error) {
	s, free := cstrings(src, dst)
	defer free()
	return describe(ctx, opts, func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_copy(s[0], s[1], co, out, cerr)
	})
}

// List returns a layout's entries, a repository's tags, or one artifact's tree.
func List(reference string, opts ...Option) (Listing, error) {
	return ListContext(context.Background(), reference, opts...)
}

// ListContext is List, stopped when ctx is done.
func ListContext(ctx context.Context, reference string, opts ...Option) (Listing, error) {
	return onReference[Listing](ctx, reference, opts, func(r *C.char, co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_list(r, co, out, cerr)
	})
}

// BlobProblem is one blob of a graph that is not what its descriptor says.
type BlobProblem struct {
	// Kind is "missing", "size mismatch", "digest mismatch" or "unreadable".
	Kind   string `json:"kind"`
	Digest string `json:"digest"`
	// Path is the digests from the root down to the blob's parent (empty for the root).
	Path    []string `json:"path"`
	Message string   `json:"message"`
}

// Verification is what Verify found.
type Verification struct {
	Reference string        `json:"reference"`
	Digest    string        `json:"digest"`
	Blobs     int           `json:"blobs"`
	Bytes     int64         `json:"bytes"`
	Problems  []BlobProblem `json:"problems"`
}

// Verify hashes every blob of an artifact's graph again; the problems are in the result (an
// error means the artifact could not be found or read at all).
func Verify(reference string, opts ...Option) (Verification, error) {
	return VerifyContext(context.Background(), reference, opts...)
}

// VerifyContext is Verify, stopped when ctx is done.
func VerifyContext(ctx context.Context, reference string, opts ...Option) (Verification, error) {
	return onReference[Verification](ctx, reference, opts, func(r *C.char, co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_verify(r, co, out, cerr)
	})
}

// RemovedBlob is a blob a collection removed.
type RemovedBlob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Deleted is what Delete or GC did (with WithDryRun: would do).
type Deleted struct {
	Reference string        `json:"reference"`
	DryRun    bool          `json:"dryRun"`
	Untagged  []string      `json:"untagged"`
	Manifest  string        `json:"manifest,omitempty"`
	Removed   []RemovedBlob `json:"removed"`
	Bytes     int64         `json:"bytes"`
	TempFiles int           `json:"tempFiles"`
	// Unpacked lists the unpacked layer directories removed, by layer digest.
	Unpacked []string `json:"unpacked"`
}

// Delete deletes a layout entry ("oci://DIR:REF") and every blob no other entry uses, or a
// registry manifest with every tag on it (needs WithForce); WithDryRun changes nothing.
func Delete(reference string, opts ...Option) (Deleted, error) {
	return collectCall(context.Background(), reference, opts, false)
}

// GC removes the blobs no entry of a layout ("oci://DIR") uses, and old temp files.
func GC(reference string, opts ...Option) (Deleted, error) {
	return collectCall(context.Background(), reference, opts, true)
}

func collectCall(ctx context.Context, reference string, opts []Option, gc bool) (Deleted, error) {
	return onReference[Deleted](ctx, reference, opts, func(r *C.char, co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		if gc {
			return C.oci_packer_gc(r, co, out, cerr)
		}
		return C.oci_packer_delete(r, co, out, cerr)
	})
}

// Extracted is what Extract wrote.
type Extracted struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	OutDir    string `json:"outDir"`
	// PackFile packs the files again to the same digest (with SourceDateEpoch set).
	PackFile        string `json:"packFile"`
	Files           int    `json:"files"`
	Bytes           int64  `json:"bytes"`
	SourceDateEpoch *int64 `json:"sourceDateEpoch"`
	// Command packs PackFile again (TARGET to fill in).
	Command string   `json:"command"`
	Images  []string `json:"images"`
	// Notes say what the pack file cannot reproduce exactly (empty for what oci-packer wrote).
	Notes []string `json:"notes"`
}

// Extract writes an artifact's layers and config as files in outDir (missing or empty
// unless WithForce) with a pack.yaml that packs them again to the same digest; a title or
// archive entry that would land outside outDir is ErrUnsafeContent, and nothing is left.
func Extract(reference, outDir string, opts ...Option) (Extracted, error) {
	return ExtractContext(context.Background(), reference, outDir, opts...)
}

// ExtractContext is Extract, stopped when ctx is done (nothing is left then).
func ExtractContext(ctx context.Context, reference, outDir string, opts ...Option) (Extracted, error) {
	s, free := cstrings(reference, outDir)
	defer free()
	return typedCall[Extracted](ctx, opts, func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_extract(s[0], s[1], co, out, cerr)
	})
}

// Login checks user and password against the registry host and stores them in the Docker
// config (WithRegistryConfig, else the default one); returns the config file written.
func Login(host, user, password string, opts ...Option) (string, error) {
	c, err := newCall(append(opts, WithCredentials(user, password)))
	if err != nil {
		return "", err
	}
	defer c.free()
	s, free := cstrings(host)
	defer free()
	var out *C.char
	var cerr *C.oci_packer_error
	if err := takeError(C.oci_packer_login(s[0], c.co, &out, &cerr), cerr); err != nil {
		return "", err
	}
	defer C.oci_packer_string_free(out)
	return C.GoString(out), nil
}

// Logout removes the credentials stored for host from the Docker config; false when there
// were none.
func Logout(host string, opts ...Option) (bool, error) {
	c, err := newCall(opts)
	if err != nil {
		return false, err
	}
	defer c.free()
	s, free := cstrings(host)
	defer free()
	var removed C.bool
	var cerr *C.oci_packer_error
	err = takeError(C.oci_packer_logout(s[0], c.co, &removed, &cerr), cerr)
	return bool(removed), err
}

// MountSpec is what Mount mounts besides the image, and how (the flags of `mount`).
type MountSpec struct {
	// Suid and Dev allow setuid programs and device nodes (default nosuid, nodev).
	Suid bool `json:"suid,omitempty"`
	Dev  bool `json:"dev,omitempty"`
	// Binds are "HOST:PATH" bind mounts, PATH inside the image.
	Binds []string `json:"binds,omitempty"`
	// Tmpfs are "PATH[:SIZE]" tmpfs mounts inside the image; /tmp, /run and /var/tmp get
	// one by default when the image has them, unless NoTmpfs.
	Tmpfs   []string `json:"tmpfs,omitempty"`
	NoTmpfs bool     `json:"noTmpfs,omitempty"`
	// Verify hashes the image's blobs again first.
	Verify bool `json:"verify,omitempty"`
	// Persistent writes systemd .mount units into UnitDir instead of mounting; Enable also
	// enables and starts them.
	Persistent bool   `json:"persistent,omitempty"`
	UnitDir    string `json:"unitDir,omitempty"`
	Enable     bool   `json:"enable,omitempty"`
}

// Mounted is what Mount did.
type Mounted struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	Dir       string `json:"dir"`
	// Layers are the layer directories, bottom first.
	Layers []string `json:"layers"`
	// Mounts are the mount points, the overlay first.
	Mounts []string `json:"mounts"`
	// Units are the unit files written (with Persistent).
	Units []string `json:"units"`
}

// Unmounted is what Umount did.
type Unmounted struct {
	Dir       string   `json:"dir"`
	Unmounted []string `json:"unmounted"`
}

// Mount mounts an image of a layout ("oci://DIR:REF") as a read-only overlayfs at dir
// (Linux, root; WithPlatform picks an index member, else this machine's). Not root is
// ErrUnsupported; a bind or tmpfs target leaving the image is ErrUnsafeContent.
func Mount(reference, dir string, spec MountSpec, opts ...Option) (Mounted, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return Mounted{}, err
	}
	s, free := cstrings(reference, dir, string(raw))
	defer free()
	return typedCall[Mounted](context.Background(), opts, func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_mount(s[0], s[1], s[2], co, out, cerr)
	})
}

// Umount unmounts everything at and below dir, deepest first (lazy: detach busy mounts).
func Umount(dir string, lazy bool) (Unmounted, error) {
	s, free := cstrings(dir)
	defer free()
	return typedCall[Unmounted](context.Background(), nil, func(co *C.oci_packer_options, out **C.char, cerr **C.oci_packer_error) C.oci_packer_status {
		return C.oci_packer_umount(s[0], C.bool(lazy), out, cerr)
	})
}

// Version is the library's version.
func Version() string { return C.GoString(C.oci_packer_version()) }
