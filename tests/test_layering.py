"""The package's layers (wsseg/__init__.py's docstring): no module imports from a layer above it."""

from __future__ import annotations

import ast
from pathlib import Path

import wsseg

SOURCE = Path(wsseg.__file__).resolve().parent


def declared_layers() -> list[list[str]]:
    """The layers, bottom first, as the package docstring lists them (one indented line each)."""
    return [line.split() for line in (wsseg.__doc__ or "").splitlines() if line.startswith("    wsseg")]


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The layer of the longest declared prefix of ``module`` (a package stands for its modules)."""
    best: tuple[int, int] | None = None
    for index, names in enumerate(layers):
        for name in names:
            if module == name or (name != "wsseg" and module.startswith(name + ".")):
                if best is None or len(name) > best[1]:
                    best = (index, len(name))
    return None if best is None else best[0]


def wsseg_imports(module: str, source: str, is_package: bool) -> list[tuple[int, str, bool]]:
    """(line, imported wsseg module, inside a function) for every import of a wsseg module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = module.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    names = [".".join(base + ([child.module] if child.module else []))]
                else:
                    names = [child.module or ""]
            found.extend((child.lineno, name, in_function) for name in names
                         if name == "wsseg" or name.startswith("wsseg."))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def upward_imports(module: str, source: str, layers: list[list[str]], is_package: bool = False) -> list[str]:
    own = layer_of(module, layers)
    assert own is not None, f"{module} belongs to no layer: add it to wsseg/__init__.py's list"
    return [f"{module}:{line} imports {name} (layer {layer_of(name, layers)} > {own})"
            for line, name, _ in wsseg_imports(module, source, is_package)
            if (layer_of(name, layers) or 0) > own]


def modules() -> list[tuple[str, str, bool]]:
    return [(module_name(path), path.read_text(), path.name == "__init__.py")
            for path in sorted(SOURCE.rglob("*.py"))]


def test_the_docstring_lists_the_layers_of_design_md_in_order() -> None:
    layers = declared_layers()
    firsts = [names[0] for names in layers]
    assert firsts == ["wsseg", "wsseg.data", "wsseg.evaluate", "wsseg.models", "wsseg.train", "wsseg.maps",
                      "wsseg.fusion", "wsseg.pipelines", "wsseg.report", "wsseg.demo", "wsseg.cli"]
    assert {"wsseg.errors", "wsseg.io", "wsseg.distributed", "wsseg.registry"} <= set(layers[0])


def test_no_module_imports_from_a_layer_above_it() -> None:
    layers = declared_layers()
    problems = [problem for module, source, package in modules()
                for problem in upward_imports(module, source, layers, package)]
    assert problems == []


def test_only_the_cli_imports_wsseg_modules_inside_functions() -> None:
    local = [f"{module}:{line} imports {name}" for module, source, package in modules()
             if module != "wsseg.cli"
             for line, name, in_function in wsseg_imports(module, source, package) if in_function]
    assert local == []


def test_the_check_catches_an_upward_import() -> None:
    layers = declared_layers()
    assert upward_imports("wsseg.maps.cam", "from wsseg.pipelines import Segmenter\n", layers) == [
        "wsseg.maps.cam:1 imports wsseg.pipelines (layer 7 > 5)"]
    assert upward_imports("wsseg.fusion", "from .crf import dense_crf\nfrom ..report import x\n", layers,
                          is_package=True) == ["wsseg.fusion:2 imports wsseg.report (layer 8 > 6)"]
    assert upward_imports("wsseg.maps.cam", "from wsseg.maps.hooks import capture_outputs\n", layers) == []
    hidden = wsseg_imports("wsseg.fusion.crf", "def f():\n    from wsseg.segment import x\n", False)
    assert hidden == [(2, "wsseg.segment", True)]
