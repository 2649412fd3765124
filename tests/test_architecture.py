"""The floors of DESIGN.md hold: import-linter's contracts (pyproject.toml), and no first-party import
hidden inside a function, where it would dodge an import cycle instead of removing it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
APPS = (
    "core",
    "accounts",
    "annotation",
    "releases",
    "training",
    "inference",
    "labscreen",
    "cases",
    "dashboard",
    "config",
)
FIRST_PARTY = APPS

# Function-level first-party imports that are not about cycles, each with its reason.
ALLOWED_LOCAL_IMPORTS = {
    # captum takes about a second to import; only heatmap requests need it.
    ("inference", "training.ml.gradcam"),
    # The test settings start the embedded PostgreSQL only when no DATABASE_URL is given.
    ("config/settings/test.py", "config.embedded"),
}


def test_import_linter_contracts_hold():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))",
        ],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _local_first_party_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                names = [inner.module]
            else:
                continue
            found += [(inner.lineno, name) for name in names if name.split(".")[0] in FIRST_PARTY]
    return found


def _allowed(relative: str, module: str) -> bool:
    return any(relative.startswith(prefix) and module == allowed for prefix, allowed in ALLOWED_LOCAL_IMPORTS)


def test_no_first_party_import_hides_inside_a_function():
    offenders = []
    for app in APPS:
        for path in sorted((BASE_DIR / app).rglob("*.py")):
            relative = path.relative_to(BASE_DIR).as_posix()
            # AppConfig.ready() is where Django wants late imports (models are not loaded before it).
            if "/migrations/" in relative or relative.endswith("/apps.py"):
                continue
            offenders += [
                f"{relative}:{line} imports {module}"
                for line, module in _local_first_party_imports(path)
                if not _allowed(relative, module)
            ]
    assert not offenders, "imports inside functions (remove the cycle instead):\n" + "\n".join(offenders)
