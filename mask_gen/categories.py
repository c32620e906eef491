"""The split of COCO categories into things and stuff.

Two id spaces meet in COCO files. COCO-Stuff uses 1-91 for things, 92-182 for stuff, 183 for "other"
(every thing pixel, as one region per image in `stuff_*2017.json`) and 0 for unlabeled. COCO panoptic uses
the 80 thing ids plus 53 stuff ids, among them the merged classes 184-200 (`tree-merged`,
`sky-other-merged`, ...), and marks each category with `isthing`. Both tables ship in
`manifests/categories/` (`coco_stuff.json`, `coco_panoptic.json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

COCO_STUFF_FIRST = 92
COCO_STUFF_LAST = 182
COCO_STUFF_OTHER = 183
UNLABELED = 0

THING = "thing"
STUFF = "stuff"
OTHER = "other"
NONE = "unlabeled"
ROLES = (THING, STUFF, OTHER, NONE)

BUNDLED_TABLES = ("coco_stuff", "coco_panoptic")


@dataclass(frozen=True)
class Category:
    """One category. `role` is `thing`, `stuff`, `other` (thing pixels without instances) or `unlabeled`."""

    id: int
    name: str
    role: str

    @property
    def isthing(self) -> bool:
        return self.role == THING


def coco_stuff_role(category_id: int) -> str:
    """Return the role of an id under the COCO-Stuff numbering."""
    if category_id == COCO_STUFF_OTHER:
        return OTHER
    if 0 < category_id < COCO_STUFF_FIRST:
        return THING
    if COCO_STUFF_FIRST <= category_id <= COCO_STUFF_LAST:
        return STUFF
    return NONE


class CategoryTable:
    """Category ids to names and roles.

    Ids missing from the table follow the COCO-Stuff numbering: 1-91 are things, 92-182 stuff, 183
    ("other") covers thing pixels, and 0 (unlabeled) never joins a region.
    """

    def __init__(self, categories: dict[int, Category], name: str = "custom"):
        self.categories = categories
        self.table_name = name
        self._by_name = {category.name: category for category in categories.values()}

    @classmethod
    def from_list(cls, entries: list[dict], isthing_from: "CategoryTable | None" = None, name: str = "custom") -> "CategoryTable":
        """Build a table from COCO `categories` entries.

        The role comes from the entry's `role`, else its `isthing`, else from `isthing_from`, else from
        the COCO-Stuff numbering.
        """
        categories = {}
        for entry in entries:
            category_id = int(entry["id"])
            if entry.get("role") in ROLES:
                role = entry["role"]
            elif "isthing" in entry:
                role = THING if entry["isthing"] else STUFF
            elif isthing_from is not None and category_id in isthing_from.categories:
                role = isthing_from.categories[category_id].role
            else:
                role = coco_stuff_role(category_id)
            categories[category_id] = Category(category_id, str(entry.get("name", category_id)), role)
        return cls(categories, name)

    @classmethod
    def from_file(cls, path: Path) -> "CategoryTable":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = data["categories"] if isinstance(data, dict) else data
        return cls.from_list(entries, name=Path(path).stem)

    @classmethod
    def bundled(cls, name: str) -> "CategoryTable":
        """Load a table shipped in `manifests/categories/`: `coco_stuff` or `coco_panoptic`."""
        from manifests import data_path

        if name not in BUNDLED_TABLES:
            raise ValueError(f"unknown category table {name!r}; bundled tables: {', '.join(BUNDLED_TABLES)}")
        return cls.from_file(data_path("categories", f"{name}.json"))

    def __reduce__(self):
        # Worker processes receive a table with every photo task: plain tuples pickle several times faster
        # than Category objects.
        rows = [(category.id, category.name, category.role) for category in self.categories.values()]
        return _table_from_rows, (rows, self.table_name)

    def __len__(self) -> int:
        return len(self.categories)

    def name(self, category_id: int) -> str:
        category = self.categories.get(category_id)
        return category.name if category else f"category-{category_id}"

    def by_name(self, name: str) -> Category | None:
        return self._by_name.get(name)

    def role(self, category_id: int) -> str:
        category = self.categories.get(category_id)
        return category.role if category is not None else coco_stuff_role(category_id)

    def is_thing(self, category_id: int) -> bool:
        return self.role(category_id) == THING

    def is_stuff(self, category_id: int) -> bool:
        return self.role(category_id) == STUFF

    def covers_things(self, category_id: int) -> bool:
        """Tell whether the category's pixels belong to things (a thing, or COCO-Stuff's 183 "other")."""
        return self.role(category_id) in (THING, OTHER)

    def resolve(self, reference: int | str) -> int | None:
        """Return the id of a category given by id or by name, or None when the table has no such name."""
        if isinstance(reference, int):
            return reference
        category = self.by_name(reference)
        return category.id if category else None


def _table_from_rows(rows: list[tuple[int, str, str]], name: str) -> CategoryTable:
    return CategoryTable({category_id: Category(category_id, label, role) for category_id, label, role in rows}, name)
