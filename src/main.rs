//! The `oci-packer` command.

fn main() {
    std::process::exit(oci_packer::cli::run(std::env::args_os()));
}
