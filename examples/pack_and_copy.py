"""Packs the README's example into a layout with a progress bar of our own, then lists it.

Run from the repository root after `pip install .`:  python examples/pack_and_copy.py
"""

from __future__ import annotations

import sys
from typing import Any

import oci_packer


def show(event: dict[str, Any]) -> None:
    """Prints one line per blob as it lands (a tqdm bar works the same way)."""
    if event["event"] in ("finished", "skipped", "mounted"):
        print(f"  {event['event']:8} {event['digest'][:19]}", file=sys.stderr)


def main() -> int:
    try:
        d = oci_packer.pack("examples/pack.yaml", "oci://build/layout:example", progress=show)
    except oci_packer.PackFileError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        return 2
    except oci_packer.OciPackerError as e:
        print(f"error ({e.kind}): {e}", file=sys.stderr)
        return 1
    print(d.digest)
    listing = oci_packer.list("oci://build/layout")
    for entry in listing["entries"]:
        print(entry["reference"], entry["digest"], entry["size"])
    copied = oci_packer.copy("oci://build/layout:example", "oci://build/copy:example")
    assert copied.digest == d.digest
    return 0


if __name__ == "__main__":
    sys.exit(main())
