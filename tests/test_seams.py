"""The backend seam holds: outside `equiv/frameworks/`, no code names a backend or its library.

Read from the source (the AST), so it cannot drift from what runs: a literal list of backend
names, a comparison with one (`fw == "torch"`), an isinstance test on a framework's class, or a
look into `sys.modules` for a framework's library, anywhere in `equiv/` but the backends' own
modules, fails here with its file and line. Every such list or test belongs in the registry
(`equiv.frameworks.REGISTRY`) or behind the backend contract.
"""

from __future__ import annotations

import ast
from pathlib import Path

from equiv.frameworks import FRAMEWORKS, REGISTRY

PACKAGE = Path(__file__).resolve().parents[1] / "equiv"
BACKENDS = set(FRAMEWORKS)
# the libraries behind them, by their import names (and TensorFlow's usual alias)
LIBRARIES = {m.split(".")[0] for r in REGISTRY.values() for m in (r.library, r.model_module, r.runtime)} - {"equiv"}
LIBRARIES |= {"tf"}
# The registry and the backends themselves; the seed's programs are kept as the blog wrote them.
EXEMPT = {"frameworks", "seed"}


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        if not EXEMPT & set(path.relative_to(PACKAGE).parts[:-1]):
            yield path, ast.parse(path.read_text())


def _strings(node) -> set[str]:
    return {e.value for e in ast.walk(node) if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def _root(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _own_backend(path: Path) -> set[str]:
    """A family's builder for one backend (equiv/families/<family>/<backend>.py) may name that
    backend, and no other."""
    return {path.stem} & BACKENDS if path.parent.parent == PACKAGE / "families" else set()


def _violations(path: Path, tree: ast.AST) -> list[str]:
    where = f"{path.relative_to(PACKAGE.parent)}"
    own = _own_backend(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = {e.value for e in node.elts if isinstance(e, ast.Constant)} & BACKENDS
            if len(names) >= 2:
                found.append(f"{where}:{node.lineno}: a literal list of backends {sorted(names)}")
        elif isinstance(node, ast.Compare):
            names = _strings(node) & BACKENDS - own
            if names and not all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                found.append(f"{where}:{node.lineno}: a test on a backend's name {sorted(names)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            classes = node.args[1] if len(node.args) > 1 else None
            roots = {_root(c) for c in (classes.elts if isinstance(classes, ast.Tuple) else [classes])}
            if roots & LIBRARIES:
                found.append(f"{where}:{node.lineno}: isinstance on a framework's class ({sorted(roots & LIBRARIES)})")
        elif isinstance(node, (ast.Call, ast.Subscript)) and "sys.modules" in ast.unparse(node):
            libs = _strings(node) & LIBRARIES
            if libs:
                found.append(f"{where}:{node.lineno}: looks for {sorted(libs)} in sys.modules")
    return found


def test_no_backend_names_outside_the_backends():
    found = [v for path, tree in _sources() for v in _violations(path, tree)]
    assert not found, "\n".join(found)


def test_the_audit_catches_each_kind():
    """Each rule fires on a planted line, so a silent audit means a clean source, not a blind one."""
    planted = {
        'FWS = ("slim", "keras")': "literal list",
        'ok = fw == "torch"': "test on a backend's name",
        "ok = isinstance(m, torch.nn.Module)": "isinstance",
        'm = sys.modules.get("keras")': "sys.modules",
    }
    for line, kind in planted.items():
        found = _violations(PACKAGE / "planted.py", ast.parse(line))
        assert len(found) == 1 and kind in found[0], (line, found)
    assert _violations(PACKAGE / "planted.py", ast.parse('ok = fw in REGISTRY and x == "logits"')) == []


def test_a_family_builder_may_name_only_its_own_backend():
    builder = PACKAGE / "families" / "resnet" / "keras.py"
    assert _violations(builder, ast.parse('ok = v.native == "keras"')) == []
    found = _violations(builder, ast.parse('ok = v.native == "torch"'))
    assert len(found) == 1 and "['torch']" in found[0], found
