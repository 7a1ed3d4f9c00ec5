"""``python -m oci_packer`` and the ``oci-packer`` command a wheel installs: the Rust CLI."""

import sys


def main() -> None:
    from . import _native

    sys.exit(_native.run_cli(["oci-packer", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
