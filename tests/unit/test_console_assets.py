"""The operations console's files (`app/console/`), read as text: nothing is fetched from another
host, no markup is built from data, and every `data-testid` of the DOM contract
(`docs/console-contract.md`) is in the sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "app" / "console"
CONTRACT = ROOT / "docs" / "console-contract.md"
ASSETS = sorted(path for path in CONSOLE.iterdir() if path.suffix in {".html", ".css", ".js", ".svg"})
SCRIPTS = [path for path in ASSETS if path.suffix == ".js"]
#: XML namespace names: identifiers that are never fetched (`createElementNS`, `xmlns=`).
NAMESPACES = {"http://www.w3.org/2000/svg"}
#: Words the contract quotes that are no test ids: values (`role-badge` reads `full` or `read-only`,
#: …), an attribute, an event's field, the API's `expect`.
CONTRACT_VALUES = {"full", "read-only", "connecting", "offline", "disabled", "online", "expect"}


def source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_console_has_its_files() -> None:
    names = {path.name for path in ASSETS}
    assert {"index.html", "console.css", "icon.svg", "app.js", "api.js", "socket.js", "dom.js", "format.js",
            "queues.js", "failed.js", "job.js", "workers.js", "schedules.js", "map.js"} <= names


@pytest.mark.parametrize("path", ASSETS, ids=[path.name for path in ASSETS])
def test_no_asset_names_another_host(path: Path) -> None:
    urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`<>)]*", source(path), re.IGNORECASE))
    assert urls - NAMESPACES == set()


@pytest.mark.parametrize("path", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_no_script_turns_data_into_markup(path: Path) -> None:
    text = source(path)
    for sink in (r"\.innerHTML\s*\+?=", r"\.outerHTML\s*\+?=", r"insertAdjacentHTML", r"document\.write",
                 r"\beval\s*\(", r"new\s+Function\s*\(", r"\.setAttribute\(\s*[\"']on", r"javascript:"):
        assert not re.search(sink, text), f"{path.name}: {sink}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[path.name for path in SCRIPTS])
def test_scripts_are_modules_that_import_only_their_neighbours(path: Path) -> None:
    imports = re.findall(r"""^\s*import\s+(?:[^'"]*?\s+from\s+)?["']([^"']+)["']""", source(path),
                         re.MULTILINE)
    assert all(name.startswith("./") and (CONSOLE / name[2:]).is_file() for name in imports), imports
    assert "require(" not in source(path)


def contract_tokens() -> list[str]:
    return re.findall(r"`([^`]+)`", source(CONTRACT))


def test_every_test_id_of_the_contract_is_in_the_sources() -> None:
    ids = sorted({token for token in contract_tokens()
                  if re.fullmatch(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+|[a-z]+", token)
                  and token not in CONTRACT_VALUES and not token.startswith("data-")})
    assert len(ids) > 60, ids
    everything = "\n".join(source(path) for path in ASSETS)
    missing = [testid for testid in ids
               if f'data-testid="{testid}"' not in everything and f'"{testid}"' not in everything]
    assert missing == []


def test_every_data_attribute_of_the_contract_is_set() -> None:
    names = sorted({match for token in contract_tokens() for match in re.findall(r"data-([a-z-]+)", token)}
                   - {"testid"})
    assert {"queue", "paused", "id", "actor", "driver-id", "lat", "lng", "ride-id", "status", "name", "state",
            "kind"} <= set(names)
    scripts = "\n".join(source(path) for path in SCRIPTS)
    html = source(CONSOLE / "index.html")
    for name in names:
        camel = re.sub(r"-([a-z])", lambda m: m.group(1).upper(), name)
        assert (f"data-{name}=" in html or re.search(rf"dataset\.{camel}\b", scripts)
                or re.search(rf"dataset: \{{[^}}]*\b{camel}\b", scripts)), name
