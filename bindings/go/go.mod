module github.com/oci-packer/oci-packer/bindings/go

go 1.22
