package ocipacker_test

import (
	"fmt"
	"os"
	"path/filepath"

	ocipacker "github.com/oci-packer/oci-packer/bindings/go"
)

// Pack a file into an OCI image layout: same inputs, same digest.
func ExamplePack() {
	dir, _ := os.MkdirTemp("", "ocipacker-example")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pack.yaml"), []byte("items:\n  - from: file://hello.txt\n"), 0o644)
	d, err := ocipacker.Pack(filepath.Join(dir, "pack.yaml"), "oci://"+dir+"/layout:v1")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(d.MediaType, d.Stats.Stored)
	// Output: application/vnd.oci.image.manifest.v1+json 3
}

// Every problem of a pack file, with its position.
func ExampleValidateYAML() {
	problems, _ := ocipacker.ValidateYAML("items:\n  - from: file://a.txt\n    platform: linux-amd64\n", ".")
	for _, p := range problems {
		fmt.Printf("%d:%d %s\n", p.Line, p.Column, p.Field)
	}
	// Output: 3:15 items[0].platform
}

// A layout's entries, typed.
func ExampleList() {
	dir, _ := os.MkdirTemp("", "ocipacker-example")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "a.txt"), []byte("a"), 0o644)
	_, err := ocipacker.PackYAML("items:\n  - from: file://a.txt\n    platform: linux/amd64\n", dir, "oci://"+dir+"/layout:v1")
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	l, _ := ocipacker.List("oci://" + dir + "/layout")
	for _, e := range l.Entries {
		fmt.Println(e.Reference, e.Kind, e.Platforms)
	}
	// Output: v1 index [linux/amd64]
}
