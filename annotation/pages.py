"""Context shared by the pages that show the class buttons: the labeling page here and the consensus page on the
dashboard floor (which imports this module; annotation never imports the dashboard)."""

from __future__ import annotations

from annotation import selectors
from annotation.models import CellClass
from annotation.selectors.agreement import UNCLASSIFIABLE


def taxonomy_context() -> dict:
    """The active classes grouped Normal / Immature for the buttons, and as data for the hotkeys."""
    classes = list(selectors.taxonomy_list(active_only=True))
    groups = [(label, [c for c in classes if c.group == value]) for value, label in CellClass.Group.choices]
    return {
        "class_groups": [(label, members) for label, members in groups if members],
        "taxonomy": [{"code": c.code, "name": c.name, "hotkey": c.hotkey} for c in classes],
        "unclassifiable": UNCLASSIFIABLE,
    }
