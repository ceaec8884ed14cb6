"""The type stubs describe the native module as built: every stubbed name exists, and every
function's and method's parameters (names, kinds, defaults where the module states them) are
those of the stub."""

import ast
import inspect
import pathlib

import moescope
from moescope import _moescope

STUB = pathlib.Path(moescope.__file__).with_name("_moescope.pyi")


def stub_params(fn: ast.FunctionDef):
    a = fn.args
    out = []
    for p in a.posonlyargs + a.args:
        out.append((p.arg, "positional"))
    for p in a.kwonlyargs:
        out.append((p.arg, "keyword"))
    return [(n, k) for n, k in out if n != "self"]


def runtime_params(obj):
    sig = inspect.signature(obj)
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
    }
    return [(n, kinds[p.kind]) for n, p in sig.parameters.items() if n != "self"]


def test_stubs_match_the_module():
    tree = ast.parse(STUB.read_text())
    checked = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert stub_params(node) == runtime_params(getattr(_moescope, node.name)), node.name
            checked += 1
        elif isinstance(node, ast.ClassDef):
            cls = getattr(_moescope, node.name)
            for item in node.body:
                if not isinstance(item, ast.FunctionDef):
                    continue
                assert hasattr(cls, item.name), f"{node.name}.{item.name}"
                is_property = any(
                    isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list
                )
                if is_property or item.name.startswith("__"):
                    continue
                target = cls if item.name == "__init__" else getattr(cls, item.name)
                assert stub_params(item) == runtime_params(target), f"{node.name}.{item.name}"
                checked += 1
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id[0].isupper() and node.target.id != node.target.id.upper():
                continue  # a type alias
            assert hasattr(_moescope, node.target.id), node.target.id
    assert checked >= 15
    for name in moescope.__all__:
        assert hasattr(moescope, name), name
