"""The package's ownership holds: using a trained model imports nothing of training."""
import os
import subprocess
import sys

import pytest


INFERENCE = ["dnc_jax.inference.restore", "dnc_jax.inference.evaluate",
             "dnc_jax.inference.embed", "dnc_jax.inference.search", "dnc_jax.inference.export",
             "dnc_jax.inference.backbone", "dnc_jax.api"]


@pytest.mark.parametrize("module", INFERENCE)
def test_inference_modules_do_not_import_training(module):
    # A fresh interpreter: this test process has imported dnc_jax.training through other tests.
    code = (f"import {module}, sys; "
            f"bad = [m for m in sys.modules if m.startswith('dnc_jax.training')]; "
            f"assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_restore_uses_a_trained_model_without_the_trainer():
    """What load_trained pulls in is the model, the checkpoint reader and the embedding pass."""
    code = ("import dnc_jax.inference.restore, sys; "
            "assert 'dnc_jax.inference.embedding' in sys.modules; "
            "assert 'dnc_jax.checkpoint' in sys.modules; "
            "assert 'dnc_jax.losses' not in sys.modules, 'losses'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("tool", ["dnc_jax.inference.evaluate", "dnc_jax.inference.embed",
                                  "dnc_jax.inference.search"])
def test_every_tool_tells_a_user_error_in_one_line(tool, tmp_path):
    """The shared start-up (`dnc_jax.cli`): a UserError is one line on stderr, exit status 2."""
    missing = tmp_path / "no-such-run"
    args = {"dnc_jax.inference.evaluate": [],
            "dnc_jax.inference.embed": [f"--images={tmp_path}", f"--out={tmp_path / 'e.npy'}"],
            "dnc_jax.inference.search": [f"--index={tmp_path / 'e.npy'}",
                                         f"--query={tmp_path / 'q.jpg'}"]}
    result = subprocess.run([sys.executable, "-m", tool, f"--workdir={missing}", *args[tool]],
                            capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnc_jax: "), result.stderr[-2000:]


PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dnc_jax")
MAX_LINES = 400


def _modules() -> dict[str, str]:
    """{'dnc_jax.x.y': path} of every module of the package ('dnc_jax.x' for x/__init__.py)."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(PACKAGE))
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = os.path.join(folder, name)
    return out


def _imports(path: str, module: str, modules) -> set[str]:
    """The package modules `path` imports, at any depth of its code (a function's lazy import
    included: a cycle through one still means two modules that cannot be read apart).
    `from a import b` names the submodule a.b where there is one, else a."""
    import ast

    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != module}


def test_no_import_cycle_in_the_package():
    modules = _modules()
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    # A package's __init__ that re-exports its own submodules is not a cycle with them: a
    # submodule importing a sibling does not run through the package's names.
    for m in graph:
        graph[m] = {d for d in graph[m] if not (m.startswith(d + ".") and d in modules)}
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_python_file_in_the_package_is_over_400_lines():
    long = {os.path.relpath(p, os.path.dirname(PACKAGE)): n for p in _modules().values()
            if (n := sum(1 for _ in open(p))) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by their jobs): {long}"


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    """The test above fails on a real cycle: two modules importing each other lazily."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from pkg.a import f\n")
    modules = {"pkg": str(pkg / "__init__.py"), "pkg.a": str(pkg / "a.py"),
               "pkg.b": str(pkg / "b.py")}
    assert _imports(modules["pkg.a"], "pkg.a", modules) == {"pkg.b"}
    assert _imports(modules["pkg.b"], "pkg.b", modules) == {"pkg.a"}
