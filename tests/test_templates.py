"""Every template loads its JavaScript as an ES module from a static file: no inline script bodies, no inline
event handlers (data travels by json_script or data- attributes), so a strict Content-Security-Policy can hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(
    path
    for pattern in ("templates/**/*.html", "*/templates/**/*.html")
    for path in ROOT.glob(pattern)
    if ".venv" not in path.parts
)
SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
# An on*= attribute inside a tag (onclick=, onload = ...), not a word in text or a data-on attribute.
HANDLER = re.compile(r"<[a-z][^>]*?\son[a-z]+\s*=", re.IGNORECASE | re.DOTALL)


def script_problems(html: str) -> list[str]:
    problems = []
    for match in SCRIPT.finditer(html):
        attrs = match["attrs"]
        if match["body"].strip():
            problems.append("inline script body")
        elif not re.search(r"\ssrc=", attrs) or not re.search(r"""\stype=["']module["']""", attrs):
            problems.append(f"script that is not an ES module file: <script{attrs}>")
    problems += [f"inline event handler: {m.group(0)[-40:]}" for m in HANDLER.finditer(html)]
    return problems


def test_the_templates_are_found():
    names = {path.relative_to(ROOT).as_posix() for path in TEMPLATES}
    assert {"templates/base.html", "dashboard/templates/dashboard/consensus.html"} <= names


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_no_template_has_inline_scripts_or_event_handlers(path):
    assert script_problems(path.read_text()) == []


@pytest.mark.parametrize(
    "html",
    [
        "<script>alert(1)</script>",
        '<script type="module">\n  import { x } from "./x.js";\n</script>',
        "<script src=\"{% static 'js/x.js' %}\" defer></script>",
        '<button type="button" onclick="go()">Go</button>',
        "<body\n  onload='start()'>",
    ],
)
def test_the_check_catches_inline_code(html):
    assert script_problems(html) != []


def test_the_check_lets_module_files_and_data_attributes_pass():
    html = """<script type="module" src="{% static 'js/label.js' %}"></script>
    <div data-online="yes" data-api-next="/api/">Turn the lamp on = off</div>"""
    assert script_problems(html) == []
