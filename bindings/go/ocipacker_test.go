package ocipacker

import (
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	cfg := write(t, dir, "config.yml", fmt.Sprintf(
		"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: %s\n", dir, addr))
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
	if err != nil || listing["kind"] != "layout" {
		t.Fatalf("list: %v %v", listing, err)
	}
	arm, err := Copy("oci://"+dir+"/layout:v1", "oci://"+dir+"/arm:v1", WithPlatform("linux/arm64"))
	if err != nil || arm.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("copy: %+v %v", arm, err)
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
