"""`docs/configuration.md` is what `scripts/dev/settings_doc.py` makes of the settings' fields."""

from __future__ import annotations

from scripts.dev.settings_doc import DOC_PATH, render


def test_the_committed_configuration_doc_is_the_generated_one() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run python -m scripts.dev.settings_doc")


def test_every_variable_has_a_row_with_its_default() -> None:
    doc = render()
    assert "| `DISPATCH_RADII_KM` | `5,10,20` |" in doc
    assert "| `RIDES_RATE_LIMIT` | `50` (production: `2`) |" in doc
    assert "| `OUTBOX_POLL_INTERVAL` | `RELAY_POLL_INTERVAL` |" in doc
