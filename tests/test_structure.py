"""The layout's promises, checked on the source: imports flow one way, no cycle, one home per code."""

from __future__ import annotations

import ast
from pathlib import Path

from locations import REPO

MODEL = REPO / "model"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``model.*`` module ``path`` imports, at any depth (lazy imports in functions too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                # ``from . import labels``: the names may be modules themselves
                found.update(f"{target}.{a.name}" for a in node.names)
            else:
                target = node.module or ""
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {t for t in found if t.startswith("model")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in MODEL.rglob("*.py")}
    return {name: {t for t in _imports(path) if t in modules and t != name} for name, path in modules.items()}


def test_model_has_no_import_cycle():
    graph = _graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import cycle: " + " → ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, path + [node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_scan_readers_never_import_their_dispatcher():
    graph = _graph()
    for reader in ("model.scans.base", "model.scans.kinds", "model.scans.slices", "model.scans.nifti",
                   "model.scans.dicom", "model.scans.archive"):
        assert not graph[reader] & {"model.scans", "model.scans.load", "model.scans.sources"}, reader


def _absolute_imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at any depth (lazy imports in functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return found


def test_model_never_imports_the_page_gradio_plots_or_training():
    """``model/`` returns numbers, arrays and dataclasses: the page (``app``, ``ui``), Gradio, pandas
    (its plot frames) and training stay outside it."""
    for path in MODEL.rglob("*.py"):
        for name in _absolute_imports(path):
            assert name.split(".")[0] not in {"app", "ui", "gradio", "gradio_client", "pandas", "lightning", "train"}, \
                f"{path.relative_to(REPO)}: imports {name}"


def test_the_structure_checks_see_lazy_and_nested_imports(tmp_path):
    """The checks above would miss nothing they claim to see: an import inside a function, a dotted one."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import gradio.themes\n    from ui.tables import area_rows\n")
    assert {n.split(".")[0] for n in _absolute_imports(probe)} == {"gradio", "ui"}


def _package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles between the children of each package: a module's import lifted to the child of the
    package that holds it (``model.scans.dicom`` → ``model.dicom.codes`` is ``model.scans`` →
    ``model.dicom``), so a subpackage importing a sibling that imports it back is a cycle even when
    no module imports itself back."""
    cycles = []
    packages = {name.rsplit(".", 1)[0] for name in graph if "." in name}
    for package in sorted(packages):
        depth = package.count(".") + 1

        def child(module: str) -> str | None:
            parts = module.split(".")
            return ".".join(parts[: depth + 1]) if module.startswith(package + ".") and len(parts) > depth else None

        lifted: dict[str, set[str]] = {}
        for source, targets in graph.items():
            a = child(source)
            for b in filter(None, map(child, targets)):
                if a and a != b:
                    lifted.setdefault(a, set()).add(b)
        done: set[str] = set()

        def visit(node: str, path: list[str]) -> None:
            if node in path:
                cycles.append(path[path.index(node):] + [node])
                return
            if node in done:
                return
            for target in sorted(lifted.get(node, ())):
                visit(target, path + [node])
            done.add(node)

        for node in sorted(lifted):
            visit(node, [])
    return cycles


def test_no_package_cycles():
    cycles = _package_cycles(_graph())
    assert not cycles, "package cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_a_package_cycle_is_caught_though_no_module_imports_itself_back():
    graph = {"model.a.x": {"model.b.y"}, "model.b.y": set(), "model.b.z": {"model.a.w"}, "model.a.w": set(),
             "model.c": {"model.a.x"}}
    assert _package_cycles(graph) == [["model.a", "model.b", "model.a"]]
    graph["model.b.z"] = set()
    assert _package_cycles(graph) == []


def test_dicom_uids_and_snomed_codes_have_one_home():
    codes = MODEL / "dicom" / "codes.py"
    for path in MODEL.rglob("*.py"):
        if path == codes:
            continue
        text = path.read_text()
        for value in ("1.2.840.10008.", "91723000", "69695003", "30315005", "14742008", "113276009"):
            assert value not in text, f"{path.relative_to(REPO)} spells out {value}; take it from model/dicom/codes.py"


def test_only_the_engines_import_torch_or_openvino():
    """``model/engines/`` holds the engines; elsewhere in ``model/`` only the checkpoint contract's
    converter and loader (``checkpoint.py``, inside its functions) reach torch, through transformers."""
    heavy = {"torch", "openvino", "transformers"}
    for path in MODEL.rglob("*.py"):
        if path.is_relative_to(MODEL / "engines"):
            continue
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                if name.split(".")[0] in heavy:
                    assert path.name == "checkpoint.py" and id(node) not in top_level, f"{path}: imports {name}"


def test_the_python_api_loads_on_first_use():
    """``from model import load_segmenter, load_scan, labels`` works; ``import model`` alone imports nothing heavy."""
    import subprocess
    import sys

    code = ("import sys, model; heavy = [m for m in ('numpy', 'PIL', 'model.scans') if m in sys.modules]; "
            "from model import labels, load_scan, load_segmenter; "
            "from model.engines.choose import load_segmenter as loader; from model.scans import load_scan as reader; "
            "assert not heavy, heavy; assert load_segmenter is loader and load_scan is reader; "
            "assert labels.ORGANS == ('stomach', 'small_bowel', 'large_bowel'); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
