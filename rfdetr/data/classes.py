"""Class ids: contiguous 0-based inside the library, mapped to and from the dataset's own ids
(sparse COCO ids, a Roboflow superclass at id 0) by :class:`ClassMap`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SUPERCLASS_MARKER = "none"
# Above LVIS (1,203 classes), the largest common detection dataset. Evaluation's per-class
# analysis grows with the square of the class count: scoring 3 images took 2.6 s and 1.9 GB
# resident at 2,000 classes, 9.7 s / 2.9 GB at 4,000 and 37 s / 5.9 GB at 10,000 (CPU, with
# faster-coco-eval); 200,000 classes crashed it at the end of the first epoch.
MAX_CLASSES = 2_000


def too_many_classes(count: int) -> str | None:
    if count > MAX_CLASSES:
        return f"{count} classes declared; at most {MAX_CLASSES} classes are supported"
    return None


@dataclass(frozen=True)
class ClassMap:
    """The classes of a dataset.

    Attributes:
        names: class names; position = 0-based library id.
        source_ids: the dataset's own id for each library id (COCO category id, YOLO class id).
        skipped: ``(source_id, name)`` of Roboflow superclass categories left out.
    """

    names: tuple[str, ...]
    source_ids: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...] = ()
    _index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.source_ids):
            raise ValueError("names and source_ids must have the same length")
        if len(set(self.source_ids)) != len(self.source_ids):
            raise ValueError(f"duplicate source ids in {self.source_ids}")
        # frozen dataclass: the lookup table is derived state, set once here.
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.source_ids)})

    @property
    def num_classes(self) -> int:
        """Number of classes (the detection head size, without a background logit)."""
        return len(self.names)

    def has_source_id(self, source_id: int) -> bool:
        return source_id in self._index

    def index_of(self, source_id: int) -> int:
        """Library id (0-based) of a dataset id; KeyError when it is not a kept class."""
        return self._index[source_id]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in checkpoints and reports."""
        return {
            "names": list(self.names),
            "source_ids": list(self.source_ids),
            "skipped": [{"source_id": s, "name": n} for s, n in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassMap:
        """Inverse of :meth:`to_dict`."""
        skipped = tuple((int(s["source_id"]), str(s["name"])) for s in data.get("skipped", ()))
        return cls(
            tuple(str(n) for n in data["names"]),
            tuple(int(i) for i in data["source_ids"]),
            skipped,
        )

    @classmethod
    def from_coco_categories(
        cls, categories: Sequence[Mapping[str, Any]], annotated_ids: Iterable[int]
    ) -> ClassMap:
        """Classes from COCO ``categories`` (``id``, ``name``, ``supercategory``), sorted by id.
        A Roboflow superclass (supercategory ``"none"``, not in ``annotated_ids``) is skipped
        unless that would leave no class at all."""
        used = set(annotated_ids)
        ordered = sorted(categories, key=lambda c: c["id"])
        kept = [
            c for c in ordered if c["id"] in used or c.get("supercategory") != SUPERCLASS_MARKER
        ]
        if not kept:
            kept = ordered
        kept_ids = {c["id"] for c in kept}
        skipped = tuple((c["id"], c["name"]) for c in ordered if c["id"] not in kept_ids)
        return cls(tuple(c["name"] for c in kept), tuple(c["id"] for c in kept), skipped)

    @classmethod
    def from_yolo_names(cls, names: Sequence[str] | Mapping[int, str]) -> ClassMap:
        """Classes from ``names`` in ``data.yaml``: a list (id = position) or an ``{id: name}``."""
        pairs = sorted(names.items()) if isinstance(names, Mapping) else list(enumerate(names))
        return cls(tuple(str(n) for _, n in pairs), tuple(int(i) for i, _ in pairs))
