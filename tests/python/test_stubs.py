"""The typing stubs match the compiled module: same functions, same parameters, in order."""

import ast
import inspect
import pathlib

import oci_packer
from oci_packer import _native


def stub_signatures():
    stub = pathlib.Path(oci_packer.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text())
    return {
        f.name: [a.arg for a in f.args.args]
        for f in tree.body
        if isinstance(f, ast.FunctionDef)
    }


def test_stubs_match_the_module():
    runtime = {
        name: list(inspect.signature(obj).parameters)
        for name, obj in vars(_native).items()
        if callable(obj) and not name.startswith("_")
    }
    assert stub_signatures() == runtime


def test_the_package_is_typed():
    assert pathlib.Path(oci_packer.__file__).with_name("py.typed").exists()
    public = set(oci_packer.__all__)
    assert {"pack", "validate", "copy", "list", "Pack", "Descriptor", "OciPackerError"} <= public
    assert all(hasattr(oci_packer, name) for name in public)
