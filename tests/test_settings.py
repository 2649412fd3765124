"""Settings: production refuses to start without its environment and passes `check --deploy`; every HEMALOOP_*
setting is declared once in base.py, read from the environment, documented in the README and read as settings.X."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
PRODUCTION_ENV = {
    "SECRET_KEY": "a-long-random-production-secret-key-that-is-not-in-the-repository-0123456789",
    "ALLOWED_HOSTS": "hemaloop.example.org",
    "DATABASE_URL": "postgres://hemaloop:pw@db.example.org:5432/hemaloop",
    "REDIS_URL": "redis://redis.example.org:6379/0",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    clean["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("missing", sorted(PRODUCTION_ENV))
def test_production_refuses_to_start_without(missing):
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


SKIPPED_DIRS = {".venv", ".git", "node_modules", "var", "staticfiles"}
SETTINGS_DIR = BASE_DIR / "config" / "settings"
GETATTR_READ = re.compile(r"getattr\(\s*settings\s*,\s*[\"']HEMALOOP_")
SETTING_READ = re.compile(r"\bsettings\.(HEMALOOP_[A-Z0-9_]+)")
HEMALOOP_NAME = re.compile(r"HEMALOOP_[A-Z0-9_]+")


def _code_files() -> list[Path]:
    """Every Python file of the project outside config/settings."""
    return [
        path
        for path in sorted(BASE_DIR.rglob("*.py"))
        if not SKIPPED_DIRS.intersection(path.relative_to(BASE_DIR).parts) and SETTINGS_DIR not in path.parents
    ]


def _base_declarations() -> dict[str, ast.expr]:
    """HEMALOOP_* names assigned at the top of base.py, each with its value; a second assignment fails here."""
    declared: dict[str, ast.expr] = {}
    for node in ast.parse((SETTINGS_DIR / "base.py").read_text()).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.startswith("HEMALOOP_"):
                    assert target.id not in declared, f"{target.id} is declared twice in base.py"
                    declared[target.id] = node.value
    return declared


def test_every_hemaloop_setting_is_read_from_the_environment_variable_of_its_name():
    declared = _base_declarations()
    assert "HEMALOOP_LABELS_PER_IMAGE" in declared
    for name, value in declared.items():
        env_reads = [
            call.args[0].value
            for call in ast.walk(value)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "env"
            and call.args
            and isinstance(call.args[0], ast.Constant)
        ]
        assert env_reads[:1] == [name], f"{name} must be read with env.<type>({name!r}, default=...)"


def test_code_reads_only_declared_hemaloop_settings_and_never_through_getattr():
    declared = set(_base_declarations())
    problems = []
    for path in _code_files():
        relative = path.relative_to(BASE_DIR).as_posix()
        text = path.read_text()
        if GETATTR_READ.search(text):
            problems.append(f"{relative}: reads a HEMALOOP setting through getattr with a default, not as settings.X")
        problems += [
            f"{relative}: settings.{name} is not declared in config/settings/base.py"
            for name in sorted(set(SETTING_READ.findall(text)) - declared)
        ]
    assert problems == []


def test_every_hemaloop_variable_of_base_settings_has_a_row_in_the_readme_configuration_table():
    readme = (BASE_DIR / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("|")]
    documented = {name for cell in first_cells for name in HEMALOOP_NAME.findall(cell)}
    in_base = set(HEMALOOP_NAME.findall((SETTINGS_DIR / "base.py").read_text()))
    assert sorted(in_base - documented) == []
