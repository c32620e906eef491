"""The split of COCO categories into things and stuff.

Two id spaces meet in COCO files. COCO-Stuff uses 1-91 for things, 92-182 for stuff, 183 for "other"
and 0 for unlabeled. COCO panoptic uses the 80 thing ids plus 53 stuff ids, among them the merged
classes 184-200 (`tree-merged`, `sky-other-merged`, ...), and marks each category with `isthing`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

COCO_STUFF_FIRST = 92
COCO_STUFF_LAST = 182
COCO_STUFF_OTHER = 183
UNLABELED = 0


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    isthing: bool


class CategoryTable:
    """Category ids to names and the thing/stuff split.

    Ids missing from the table follow the COCO-Stuff numbering: 92-182 are stuff, 183 ("other") and 0
    (unlabeled) are neither and never join a region.
    """

    def __init__(self, categories: dict[int, Category]):
        self.categories = categories

    @classmethod
    def from_list(cls, entries: list[dict], isthing_from: "CategoryTable | None" = None) -> "CategoryTable":
        """Build a table from COCO `categories` entries; `isthing` comes from the entry, else from `isthing_from`."""
        categories = {}
        for entry in entries:
            category_id = int(entry["id"])
            if "isthing" in entry:
                isthing = bool(entry["isthing"])
            elif isthing_from is not None and category_id in isthing_from.categories:
                isthing = isthing_from.categories[category_id].isthing
            else:
                isthing = category_id < COCO_STUFF_FIRST
            categories[category_id] = Category(category_id, str(entry.get("name", category_id)), isthing)
        return cls(categories)

    @classmethod
    def from_file(cls, path: Path) -> "CategoryTable":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = data["categories"] if isinstance(data, dict) else data
        return cls.from_list(entries)

    def name(self, category_id: int) -> str:
        category = self.categories.get(category_id)
        return category.name if category else f"category-{category_id}"

    def is_thing(self, category_id: int) -> bool:
        category = self.categories.get(category_id)
        if category is not None:
            return category.isthing
        return 0 < category_id < COCO_STUFF_FIRST

    def is_stuff(self, category_id: int) -> bool:
        if category_id in (UNLABELED, COCO_STUFF_OTHER):
            return False
        category = self.categories.get(category_id)
        if category is not None:
            return not category.isthing
        return COCO_STUFF_FIRST <= category_id <= COCO_STUFF_LAST
