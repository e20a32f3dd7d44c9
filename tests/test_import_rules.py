"""The package layering of docs/architecture.md, checked on every import statement (function-level ones too).

contract/ imports nothing of ours; runtime/ never imports trainer/ or envs/; envs/ never imports trainer/
or runtime/; trainer/ imports runtime/ only where it really uses the running service.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"contract", "envs", "trainer", "runtime", "protos", "bench", "scripts", "tests"}
FORBIDDEN = {
    "contract": OURS - {"contract"},
    "runtime": {"trainer", "envs", "bench", "scripts", "tests"},
    "envs": {"trainer", "runtime", "bench", "scripts", "tests"},
    "protos": OURS - {"protos"},
}
# trainer modules that use the runtime itself: the gRPC client (closed-loop evaluation), the serve
# command, and the demo, which starts the real runtime process.
TRAINER_USES_RUNTIME = {"trainer/served_policies.py", "trainer/commands/serve.py", "trainer/demo.py"}


def imports(path: Path) -> set[str]:
    """Top-level packages ``path`` imports (relative imports resolve inside its own package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def violations(package: str, forbidden: set[str]) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if package == "protos" and path.name.endswith(("_pb2.py", "_pb2_grpc.py", "generate.py")):
            continue  # generated code and its generator import only protobuf/grpc
        out += [f"{rel} imports {bad}" for bad in sorted(imports(path) & forbidden)]
    return out


def test_layers_import_only_downwards():
    found = [v for package, forbidden in FORBIDDEN.items() for v in violations(package, forbidden)]
    assert found == []


def test_trainer_imports_the_runtime_only_where_it_uses_the_service():
    users = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "trainer").rglob("*.py")
        if "runtime" in imports(path)
    }
    assert users <= TRAINER_USES_RUNTIME, (
        f"unexpected trainer -> runtime imports: {sorted(users - TRAINER_USES_RUNTIME)}"
    )


def test_the_rules_see_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from trainer.cli import main\n    import runtime.server\n")
    assert imports(module) == {"trainer", "runtime"}
