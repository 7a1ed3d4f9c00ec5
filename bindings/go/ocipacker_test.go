package ocipacker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startRegistry runs Debian's docker-registry on 127.0.0.1 for the test.
func startRegistry(t *testing.T) string {
	t.Helper()
	return startRegistryWith(t, "")
}

// startRegistryWith runs docker-registry with extra configuration (auth).
func startRegistryWith(t *testing.T, extra string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := write(t, dir, "config.yml", fmt.Sprintf(
		"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: %s\n%s", dir, addr, extra))
	cmd := exec.Command("docker-registry", "serve", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatalf("docker-registry must be installed (scripts/test installs it): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("registry did not start")
	return ""
}

func TestVersion(t *testing.T) {
	if Version() != "0.1.0" {
		t.Fatalf("version %q", Version())
	}
}

func TestPackValidateListCopy(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.txt", "alpha")
	write(t, dir, "b.json", "{}")
	pack := write(t, dir, "pack.yaml", "type: application/vnd.example.go\nitems:\n  - from: file://a.txt\n    platform: linux/amd64\n  - from: file://b.json\n    platform: linux/arm64\n")
	var mu sync.Mutex
	events := map[string]int{}
	d, err := Pack(pack, "oci://"+dir+"/layout:v1", WithConcurrency(2), WithProgress(func(e ProgressEvent) {
		mu.Lock()
		events[e.Event]++
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d.Digest, "sha256:") || d.MediaType != "application/vnd.oci.image.index.v1+json" || d.ArtifactType != "application/vnd.example.go" {
		t.Fatalf("descriptor %+v", d)
	}
	if events["started"] != events["finished"] || events["started"] == 0 {
		t.Fatalf("progress events %v", events)
	}
	problems, err := Validate(pack)
	if err != nil || len(problems) != 0 {
		t.Fatalf("valid pack: %v %v", problems, err)
	}
	listing, err := List("oci://" + dir + "/layout")
	if err != nil || listing.Kind != "layout" || len(listing.Entries) != 1 || listing.Entries[0].Reference != "v1" ||
		listing.Entries[0].Kind != "index" || len(listing.Entries[0].Platforms) != 2 || listing.Entries[0].Size == 0 {
		t.Fatalf("list: %+v %v", listing, err)
	}
	tree, err := List("oci://" + dir + "/layout:v1")
	if err != nil || tree.Kind != "artifact" || tree.Tree == nil || len(tree.Tree.Children) != 2 ||
		tree.Tree.Children[0].Descriptor.Platform == nil || tree.Tree.Children[0].Descriptor.Platform.OS != "linux" {
		t.Fatalf("tree: %+v %v", tree, err)
	}
	if d.Stats.Stored == 0 || d.Stats.Bytes == 0 {
		t.Fatalf("stats %+v", d.Stats)
	}
	v, err := Verify("oci://" + dir + "/layout:v1")
	if err != nil || len(v.Problems) != 0 || v.Blobs < 5 || v.Digest != d.Digest {
		t.Fatalf("verify: %+v %v", v, err)
	}
	x, err := Extract("oci://"+dir+"/layout:v1", dir+"/extracted", WithUnpack(), WithLimits(1<<20, 0))
	if err != nil || x.Digest != d.Digest || x.PackFile != dir+"/extracted/pack.yaml" || len(x.Notes) != 0 {
		t.Fatalf("extract: %+v %v", x, err)
	}
	again, err := Pack(x.PackFile, "oci://"+dir+"/again:v1")
	if err != nil || again.Digest != d.Digest {
		t.Fatalf("pack of the extracted pack.yaml: %+v %v", again, err)
	}
	if _, err := Extract("oci://"+dir+"/layout:v1", dir+"/extracted"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("extract into a non-empty directory: %v", err)
	}
	write(t, dir, "evil.yaml", "items:\n  - from: file://a.txt\n    annotations: {org.opencontainers.image.title: /etc/evil}\n")
	if _, err := Pack(dir+"/evil.yaml", "oci://"+dir+"/evil:v1"); err != nil {
		t.Fatal(err)
	}
	var unsafeErr *Error
	if _, err := Extract("oci://"+dir+"/evil:v1", dir+"/evil-out"); !errors.Is(err, ErrUnsafeContent) || !errors.As(err, &unsafeErr) || unsafeErr.Digest == "" {
		t.Fatalf("unsafe title: %v", err)
	}
	arm, err := Copy("oci://"+dir+"/layout:v1", "oci://"+dir+"/arm:v1", WithPlatform("linux/arm64"))
	if err != nil || arm.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("copy: %+v %v", arm, err)
	}
	dry, err := Delete("oci://"+dir+"/layout:v1", WithDryRun())
	if err != nil || !dry.DryRun || len(dry.Removed) == 0 {
		t.Fatalf("delete --dry-run: %+v %v", dry, err)
	}
	gone, err := Delete("oci://" + dir + "/layout:v1")
	if err != nil || len(gone.Removed) != len(dry.Removed) || gone.Untagged[0] != "v1" {
		t.Fatalf("delete: %+v %v", gone, err)
	}
	if _, err := GC("oci://" + dir + "/layout"); err != nil {
		t.Fatalf("gc: %v", err)
	}
}

func TestErrorsMapToSentinels(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.txt", "alpha")
	bad := write(t, dir, "bad.yaml", "items:\n  - from: file://a.txt\n    platform: linux-amd64\n")
	problems, err := Validate(bad)
	if err != nil || len(problems) != 1 || problems[0].Field != "items[0].platform" || problems[0].Line != 3 {
		t.Fatalf("problems %+v %v", problems, err)
	}
	_, err = Pack(bad, "oci://"+dir+"/layout:v1")
	var e *Error
	if !errors.Is(err, ErrPackFile) || !errors.As(err, &e) || e.Code() != CodePackFile || !strings.Contains(e.Error(), "linux-amd64") {
		t.Fatalf("pack file error: %v", err)
	}
	_, err = Pack(write(t, dir, "missing.yaml", "items:\n  - from: file://nope\n"), "oci://"+dir+"/layout:v1")
	if !errors.Is(err, ErrSourceNotFound) {
		t.Fatalf("missing source: %v", err)
	}
	_, err = List("oci://" + dir + "/nowhere:v1")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing layout: %v", err)
	}
	_, err = Pack(bad, "ftp://x/y")
	if !errors.Is(err, ErrInvalidReference) && !errors.Is(err, ErrPackFile) {
		t.Fatalf("bad target: %v", err)
	}
	_, err = Pack(filepath.Join(dir, "a.txt"), "oci://"+dir+"/layout:v1", WithConcurrency(0))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("concurrency 0: %v", err)
	}
}

func TestRegistryAndConcurrentCalls(t *testing.T) {
	reg := startRegistry(t)
	dir := t.TempDir()
	write(t, dir, "a.txt", "alpha")
	pack := write(t, dir, "pack.yaml", "items:\n  - from: file://a.txt\n")
	var wg sync.WaitGroup
	digests := make([]string, 8)
	errs := make([]error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d, err := Pack(pack, fmt.Sprintf("%s/go/art%d:v1", reg, i), WithPlainHTTP())
			digests[i], errs[i] = d.Digest, err
		}(i)
	}
	wg.Wait()
	for i := range digests {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Fatalf("goroutine %d: %v %q vs %q", i, errs[i], digests[i], digests[0])
		}
	}
	back, err := Copy(reg+"/go/art3:v1", "oci://"+dir+"/pulled:v1", WithPlainHTTP())
	if err != nil || back.Digest != digests[0] {
		t.Fatalf("copy back: %+v %v", back, err)
	}
	_, err = Copy(reg+"/go/missing:v1", "oci://"+dir+"/pulled:v2", WithPlainHTTP())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}

// A platform with os.version and os.features comes back typed.
func TestPlatformWithFeatures(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.txt", "alpha")
	pack := write(t, dir, "pack.yaml", "items:\n  - from: file://a.txt\n    platform: windows(10.0.17763+win32k)/amd64\n")
	if _, err := Pack(pack, "oci://"+dir+"/layout:v1"); err != nil {
		t.Fatal(err)
	}
	member, err := Copy("oci://"+dir+"/layout:v1", "oci://"+dir+"/member:v1", WithPlatform("windows(10.0.17763+win32k)/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := List("oci://" + dir + "/layout:v1")
	if err != nil {
		t.Fatal(err)
	}
	p := tree.Tree.Children[0].Descriptor.Platform
	if p == nil || p.OSVersion != "10.0.17763" || len(p.OSFeatures) != 1 || p.OSFeatures[0] != "win32k" {
		t.Fatalf("platform %+v", p)
	}
	if member.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("member %+v", member)
	}
}

// A 1 GiB push to a real registry stops within 2 s of its context being cancelled, with an
// error that is context.Canceled (and ErrCancelled), and leaves no tag.
func TestContextCancelsAPush(t *testing.T) {
	reg := startRegistry(t)
	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	pack := write(t, dir, "pack.yaml", "items:\n  - from: file://big.bin\n")
	ctx, cancel := context.WithCancel(context.Background())
	flowing := make(chan struct{})
	var once sync.Once
	type outcome struct {
		err error
		at  time.Time
	}
	done := make(chan outcome, 1)
	go func() {
		_, err := PackContext(ctx, pack, reg+"/go/big:v1", WithPlainHTTP(), WithProgress(func(e ProgressEvent) {
			if e.Bytes > 0 {
				once.Do(func() { close(flowing) })
			}
		}))
		done <- outcome{err, time.Now()}
	}()
	select {
	case <-flowing:
	case o := <-done:
		t.Fatalf("the push ended before any progress: %v", o.err)
	}
	cancelled := time.Now()
	cancel()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("the push did not stop within 2 s of the cancel")
	}
	if !errors.Is(o.err, context.Canceled) || !errors.Is(o.err, ErrCancelled) {
		t.Fatalf("error %v", o.err)
	}
	if took := o.at.Sub(cancelled); took > 2*time.Second {
		t.Fatalf("stopped %v after the cancel", took)
	}
	_, err = List(reg+"/go/big:v1", WithPlainHTTP())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("a tag was written: %v", err)
	}
	// A context done before the call: nothing starts.
	_, err = PackContext(ctx, pack, reg+"/go/big:v2", WithPlainHTTP())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("done context: %v", err)
	}
}

// A panic in a progress callback does not kill the process: the operation stops and returns
// an error saying so.
func TestProgressPanicBecomesAnError(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.txt", "alpha")
	pack := write(t, dir, "pack.yaml", "items:\n  - from: file://a.txt\n")
	_, err := Pack(pack, "oci://"+dir+"/layout:v1", WithProgress(func(ProgressEvent) { panic("boom") }))
	var e *Error
	if err == nil || !errors.As(err, &e) || !strings.Contains(err.Error(), "progress callback panicked: boom") {
		t.Fatalf("error %v", err)
	}
	if _, err := List("oci://" + dir + "/layout:v1"); err == nil {
		t.Fatal("a tag was written")
	}
}

// Errors carry the registry's answer: a registry with htpasswd refuses a wrong password with
// 401 UNAUTHORIZED; Login stores good credentials, Logout removes them.
func TestRegistryErrorFieldsLoginLogout(t *testing.T) {
	dir := t.TempDir()
	htpasswd, err := exec.Command("htpasswd", "-Bbn", "go-user", "go-secret").Output()
	if err != nil {
		t.Fatalf("htpasswd must be installed (scripts/test installs it): %v", err)
	}
	write(t, dir, "htpasswd", string(htpasswd))
	reg := startRegistryWith(t, fmt.Sprintf("auth:\n  htpasswd:\n    realm: go-test\n    path: %s/htpasswd\n", dir))
	write(t, dir, "a.txt", "alpha")
	pack := write(t, dir, "pack.yaml", "items:\n  - from: file://a.txt\n")
	config := filepath.Join(dir, "config.json")
	_, err = Pack(pack, reg+"/go/auth:v1", WithPlainHTTP(), WithCredentials("go-user", "wrong"))
	var e *Error
	if !errors.Is(err, ErrAuth) || !errors.As(err, &e) || e.HTTPStatus != 401 || e.RegistryCode != "UNAUTHORIZED" {
		t.Fatalf("wrong password: %v %+v", err, e)
	}
	if _, err := Login(reg, "go-user", "wrong", WithPlainHTTP(), WithRegistryConfig(config)); !errors.Is(err, ErrAuth) {
		t.Fatalf("login with a wrong password: %v", err)
	}
	written, err := Login(reg, "go-user", "go-secret", WithPlainHTTP(), WithRegistryConfig(config))
	if err != nil || written != config {
		t.Fatalf("login: %q %v", written, err)
	}
	if _, err := Pack(pack, reg+"/go/auth:v1", WithPlainHTTP(), WithRegistryConfig(config)); err != nil {
		t.Fatalf("push with stored credentials: %v", err)
	}
	removed, err := Logout(reg, WithRegistryConfig(config))
	if err != nil || !removed {
		t.Fatalf("logout: %v %v", removed, err)
	}
	if removed, _ := Logout(reg, WithRegistryConfig(config)); removed {
		t.Fatal("second logout removed something")
	}
	_, err = Pack(write(t, dir, "missing.yaml", "items:\n  - from: file://nope.txt\n"), "oci://"+dir+"/l:v1")
	if !errors.As(err, &e) || !strings.HasSuffix(e.Path, "nope.txt") {
		t.Fatalf("path of a missing source: %v %+v", err, e)
	}
}

// What `go get` delivers: this package alone (no ../../include, no ../../target next to it),
// used from a separate module through a replace, finds the installed release library with
// pkg-config and packs into a layout.
func TestSeparateModule(t *testing.T) {
	if _, err := exec.LookPath("pkg-config"); err != nil {
		t.Fatal("pkg-config must be installed")
	}
	if out, err := exec.Command("pkg-config", "--modversion", "oci_packer").CombinedOutput(); err != nil {
		t.Fatalf("the C library must be installed (scripts/install-c PREFIX, PKG_CONFIG_PATH): %v %s", err, out)
	}
	root := t.TempDir()
	pkg := filepath.Join(root, "ocipacker")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"go.mod", "ocipacker.go"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		write(t, pkg, name, string(data))
	}
	app := filepath.Join(root, "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, app, "go.mod", "module example.com/app\n\ngo 1.22\n\nrequire github.com/oci-packer/oci-packer/bindings/go v0.0.0\n\nreplace github.com/oci-packer/oci-packer/bindings/go => ../ocipacker\n")
	write(t, app, "main.go", `package main

import (
	"fmt"
	"os"

	ocipacker "github.com/oci-packer/oci-packer/bindings/go"
)

func main() {
	os.WriteFile("hello.txt", []byte("hello"), 0o644)
	os.WriteFile("pack.yaml", []byte("items:\n  - from: file://hello.txt\n"), 0o644)
	d, err := ocipacker.Pack("pack.yaml", "oci://layout:v1")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(d.Digest)
}
`)
	cmd := exec.Command("go", "run", ".")
	cmd.Dir = app
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "sha256:") {
		t.Fatalf("output %s", out)
	}
	if _, err := os.Stat(filepath.Join(app, "layout", "index.json")); err != nil {
		t.Fatal(err)
	}
}

func TestMountUmount(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := []byte("from go\n")
	if err := tw.WriteHeader(&tar.Header{Name: "etc/motd", Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	write(t, dir, "layer.tar", buf.String())
	write(t, dir, "cfg.json", `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	pack := write(t, dir, "image.yaml", "config: {from: file://cfg.json, type: application/vnd.oci.image.config.v1+json}\nitems:\n  - from: file://layer.tar\n")
	if _, err := Pack(pack, "oci://"+dir+"/images:v1"); err != nil {
		t.Fatal(err)
	}
	mnt := dir + "/mnt"
	m, err := Mount("oci://"+dir+"/images:v1", mnt, MountSpec{NoTmpfs: true})
	if err != nil || len(m.Layers) != 1 || m.Mounts[0] != mnt {
		t.Fatalf("mount: %+v %v", m, err)
	}
	got, err := os.ReadFile(mnt + "/etc/motd")
	u, uerr := Umount(mnt, false)
	if err != nil || string(got) != "from go\n" {
		t.Fatalf("read %q %v", got, err)
	}
	if uerr != nil || len(u.Unmounted) != 1 {
		t.Fatalf("umount: %+v %v", u, uerr)
	}
	if _, err := Mount("oci://"+dir+"/images:v1", dir+"/m2", MountSpec{Binds: []string{"nocolon"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad bind: %v", err)
	}
}
