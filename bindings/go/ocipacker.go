// Package ocipacker is the Go interface to oci-packer: pack declarative YAML pack files into
// OCI artifacts in registries and OCI image layouts, copy and list them. It calls the C ABI
// (include/oci_packer.h) of the Rust library, linked statically from target/debug (build
// it first with `cargo build -p oci-packer-c`).
package ocipacker

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: ${SRCDIR}/../../target/debug/liboci_packer.a -lpthread -ldl -lm
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
	"encoding/json"
	"errors"
	"fmt"
	"runtime/cgo"
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
)

var sentinels = map[Code]error{
	CodePackFile: ErrPackFile, CodeInvalidReference: ErrInvalidReference, CodeSourceNotFound: ErrSourceNotFound,
	CodeAuthentication: ErrAuth, CodeNotFound: ErrNotFound, CodeDigestMismatch: ErrDigestMismatch,
	CodeRegistry: ErrRegistry, CodeNetwork: ErrNetwork, CodeIO: ErrIO, CodeUnsupported: ErrUnsupported,
	CodeCancelled: ErrCancelled, CodeInvalidArgument: ErrInvalidArgument, CodeNullArgument: ErrInvalidArgument,
	CodeInvalidUTF8: ErrInvalidArgument, CodeInternal: ErrInternal, CodePanic: ErrInternal,
}

// Error is an error of the library: a code and a message naming the thing.
type Error struct {
	code    Code
	message string
}

// Code says what kind of error it is.
func (e *Error) Code() Code { return e.code }

func (e *Error) Error() string { return e.message }

// Unwrap gives the sentinel of the error's kind, for errors.Is.
func (e *Error) Unwrap() error { return sentinels[e.code] }

// takeError copies and frees a C error object.
func takeError(status C.oci_packer_status, cerr *C.oci_packer_error) error {
	if status == 0 {
		return nil
	}
	msg := fmt.Sprintf("oci-packer status %d", status)
	if cerr != nil {
		msg = C.GoString(C.oci_packer_error_message(cerr))
		C.oci_packer_error_free(cerr)
	}
	return &Error{code: Code(status), message: msg}
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
	fsync, dryRun, plainHTTP, insecure                                    bool
	progress                                                              func(ProgressEvent)
}

// WithConcurrency sets -j (default 4).
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

// WithProgress calls f for progress events, from other goroutines' threads, possibly at once.
func WithProgress(f func(ProgressEvent)) Option { return func(o *options) { o.progress = f } }

//export goProgress
func goProgress(event *C.oci_packer_progress, userData unsafe.Pointer) {
	f := cgo.Handle(uintptr(userData)).Value().(func(ProgressEvent))
	str := func(p *C.char) string {
		if p == nil {
			return ""
		}
		return C.GoString(p)
	}
	f(ProgressEvent{
		Event: str(event.event), Digest: str(event.digest), Title: str(event.title), Source: str(event.source),
		Size: uint64(event.size), Bytes: uint64(event.bytes),
	})
}

// cOptions builds the C options; the returned func frees them (and the callback handle).
func cOptions(opts []Option) (*C.oci_packer_options, func(), error) {
	o := options{concurrency: 4}
	for _, f := range opts {
		f(&o)
	}
	co := C.oci_packer_options_new()
	var handle cgo.Handle
	free := func() {
		C.oci_packer_options_free(co)
		if handle != 0 {
			handle.Delete()
		}
	}
	var cerr *C.oci_packer_error
	check := func(st C.oci_packer_status) error { return takeError(st, cerr) }
	if err := check(C.oci_packer_options_set_concurrency(co, C.uint32_t(o.concurrency), &cerr)); err != nil {
		free()
		return nil, nil, err
	}
	for _, s := range []struct {
		value string
		set   func(*C.oci_packer_options, *C.char, **C.oci_packer_error) C.oci_packer_status
	}{
		{o.tmpDir, func(a *C.oci_packer_options, b *C.char, c **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_tmp_dir(a, b, c)
		}},
		{o.created, func(a *C.oci_packer_options, b *C.char, c **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_created(a, b, c)
		}},
		{o.platform, func(a *C.oci_packer_options, b *C.char, c **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_platform(a, b, c)
		}},
		{o.caFile, func(a *C.oci_packer_options, b *C.char, c **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_ca_file(a, b, c)
		}},
		{o.username, func(a *C.oci_packer_options, b *C.char, c **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_username(a, b, c)
		}},
		{o.password, func(a *C.oci_packer_options, b *C.char, c **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_password(a, b, c)
		}},
		{o.registryConfig, func(a *C.oci_packer_options, b *C.char, c **C.oci_packer_error) C.oci_packer_status {
			return C.oci_packer_options_set_registry_config(a, b, c)
		}},
	} {
		if s.value == "" {
			continue
		}
		cs := C.CString(s.value)
		err := check(s.set(co, cs, &cerr))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			free()
			return nil, nil, err
		}
	}
	C.oci_packer_options_set_fsync(co, C.bool(o.fsync), nil)
	C.oci_packer_options_set_dry_run(co, C.bool(o.dryRun), nil)
	C.oci_packer_options_set_plain_http(co, C.bool(o.plainHTTP), nil)
	C.oci_packer_options_set_insecure(co, C.bool(o.insecure), nil)
	if o.progress != nil {
		handle = cgo.NewHandle(o.progress)
		C.set_progress(co, C.uintptr_t(handle))
	}
	return co, free, nil
}

// Descriptor is what Pack and Copy return: the OCI descriptor of the root, and where it went.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     map[string]string `json:"platform,omitempty"`
	Reference    string            `json:"reference"`
	Stats        map[string]int64  `json:"stats"`
}

// Problem is one problem of an invalid pack file.
type Problem struct {
	File    *string `json:"file"`
	Line    int     `json:"line"`
	Column  int     `json:"column"`
	Field   string  `json:"field"`
	Message string  `json:"message"`
}

func result(status C.oci_packer_status, out *C.char, cerr *C.oci_packer_error, v any) error {
	if err := takeError(status, cerr); err != nil {
		return err
	}
	defer C.oci_packer_string_free(out)
	return json.Unmarshal([]byte(C.GoString(out)), v)
}

// Pack builds the artifact described by the pack file and writes it to target
// ("host/repo:tag" or "oci://DIR:REF").
func Pack(packFile, target string, opts ...Option) (Descriptor, error) {
	co, free, err := cOptions(opts)
	if err != nil {
		return Descriptor{}, err
	}
	defer free()
	cpath, ctarget := C.CString(packFile), C.CString(target)
	defer C.free(unsafe.Pointer(cpath))
	defer C.free(unsafe.Pointer(ctarget))
	var out *C.char
	var cerr *C.oci_packer_error
	var d Descriptor
	err = result(C.oci_packer_pack_file(cpath, ctarget, co, &out, &cerr), out, cerr, &d)
	return d, err
}

// Validate returns every problem of a pack file (none when it is valid).
func Validate(packFile string) ([]Problem, error) {
	cpath := C.CString(packFile)
	defer C.free(unsafe.Pointer(cpath))
	var out *C.char
	var cerr *C.oci_packer_error
	var problems []Problem
	err := result(C.oci_packer_validate_file(cpath, &out, &cerr), out, cerr, &problems)
	return problems, err
}

// Copy copies an artifact between registries and layouts, in any direction.
func Copy(src, dst string, opts ...Option) (Descriptor, error) {
	co, free, err := cOptions(opts)
	if err != nil {
		return Descriptor{}, err
	}
	defer free()
	csrc, cdst := C.CString(src), C.CString(dst)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cdst))
	var out *C.char
	var cerr *C.oci_packer_error
	var d Descriptor
	err = result(C.oci_packer_copy(csrc, cdst, co, &out, &cerr), out, cerr, &d)
	return d, err
}

// List returns a layout's entries, a repository's tags, or one artifact's tree, as decoded JSON.
func List(reference string, opts ...Option) (map[string]any, error) {
	co, free, err := cOptions(opts)
	if err != nil {
		return nil, err
	}
	defer free()
	cref := C.CString(reference)
	defer C.free(unsafe.Pointer(cref))
	var out *C.char
	var cerr *C.oci_packer_error
	listing := map[string]any{}
	err = result(C.oci_packer_list(cref, co, &out, &cerr), out, cerr, &listing)
	return listing, err
}

// Version is the library's version.
func Version() string { return C.GoString(C.oci_packer_version()) }
