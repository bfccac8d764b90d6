"""The type stub of the compiled module names what the module has: every
public class, function and method, and nothing it lacks."""

import ast
import inspect
from pathlib import Path

import etl_cache._native as native

STUB = Path(__file__).resolve().parents[1] / "etl_cache" / "_native.pyi"

# Special methods a stub states where the module defines them.
SPECIAL = {"__contains__", "__iter__", "__next__", "__enter__", "__exit__", "__new__"}


def _stub() -> dict[str, set[str] | None]:
    """Top-level names of the stub; a class maps to its methods."""
    out: dict[str, set[str] | None] = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = None
    return out


def _module() -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for name, obj in vars(native).items():
        if name.startswith("__") and name != "__version__":
            continue
        if inspect.isclass(obj):
            out[name] = {
                m
                for m in vars(obj)
                if (not m.startswith("_") or m in SPECIAL)
                and m not in ("__new__",)
                and callable(getattr(obj, m))
            }
        elif callable(obj) or name == "__version__":
            out[name] = None
    return out


def test_the_stub_names_every_public_name_of_the_module():
    stub, module = _stub(), _module()
    assert set(stub) == set(module)
    for name, methods in module.items():
        if methods is None:
            continue
        stated = (stub[name] or set()) - {"__new__"}
        assert stated == methods, name
