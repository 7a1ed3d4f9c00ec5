// Prints containerd's normalised form (platforms.Parse, then platforms.Normalize) of each
// platform spelling read from stdin, one JSON object per line, for the differential test of
// oci-packer's platform parser.
package main

import (
	"bufio"
	"encoding/json"
	"os"

	"github.com/containerd/platforms"
)

type result struct {
	In           string   `json:"in"`
	OK           bool     `json:"ok"`
	OS           string   `json:"os,omitempty"`
	OSVersion    string   `json:"osVersion,omitempty"`
	OSFeatures   []string `json:"osFeatures,omitempty"`
	Architecture string   `json:"architecture,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		r := result{In: in.Text()}
		if p, err := platforms.Parse(r.In); err == nil {
			p = platforms.Normalize(p)
			r = result{r.In, true, p.OS, p.OSVersion, p.OSFeatures, p.Architecture, p.Variant}
		}
		if err := out.Encode(r); err != nil {
			os.Exit(1)
		}
	}
	if in.Err() != nil {
		os.Exit(1)
	}
}
