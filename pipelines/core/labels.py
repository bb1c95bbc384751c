"""One label vocabulary per dataset: fixed from ``classes`` or fitted on the training split, applied to every split.

Every dataset kind that reads string (or integer-looking) label cells maps them through a
:class:`LabelVocab`, so a class index means the same class in train, validation, test
and predict, and a label the vocabulary does not hold can never shift the others:

* ``LabelVocab.fit(train_cells, classes)`` takes ``classes`` as given (the config's
  ``classes`` option, in index order), else the sorted distinct non-empty training labels
  (integer-looking labels sorted as numbers, so ``0..10`` keep their order).
* ``vocab.encode(cells)`` returns int64 indices and a reject reason per cell:
  ``empty_label`` for an empty cell, ``unknown_label`` for a value outside the
  vocabulary (for a test row that is a class seen only in test), ``""`` when kept.

The vocabulary goes into every split's index (``labels.<col>.classes`` plus
``labels.<col>.classes_from``), and from there into ``metrics.json`` and the plots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from shardtrain.core.errors import ShardtrainError

_INT_RE = re.compile(r"^[+-]?\d+$")
EMPTY_LABEL = "empty_label"
UNKNOWN_LABEL = "unknown_label"


def _cell(value: Any) -> str:
    """A label cell as a stripped string ('' for None/NaN, ``3`` for the float 3.0 a CSV reader made)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN: a missing cell
            return ""
        if value.is_integer():
            return str(int(value))
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def cells(values: Iterable[Any]) -> np.ndarray:
    """Label cells as an object array of stripped strings (None/NaN -> '')."""
    return np.array([_cell(v) for v in values], dtype=object)


@dataclass(frozen=True)
class LabelVocab:
    """Class names in index order, and where they came from (``option`` or ``train``)."""

    classes: tuple[str, ...]
    source: str = "train"

    @classmethod
    def fit(cls, train_cells: Iterable[Any], classes: Sequence[Any] | None = None,
            key: str = "dataset.options.classes") -> LabelVocab:
        """The vocabulary: ``classes`` when given (must be distinct and non-empty), else the training labels.

        ``key`` names the config key in the error for bad ``classes``.
        """
        if classes is not None:
            names = tuple(_cell(c) for c in classes)
            if not names or any(not n for n in names):
                raise ShardtrainError(f"config key '{key}': expected a non-empty list of non-empty class names, "
                                      f"got {list(classes)!r}")
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ShardtrainError(f"config key '{key}': class names must be distinct, repeated: {dupes}")
            return cls(names, "option")
        seen = {c for c in cells(train_cells).tolist() if c}
        if not seen:
            raise ShardtrainError("the training split has no labelled row to learn the classes from "
                                  f"(set {key})")
        if all(_INT_RE.match(c) for c in seen):
            # Numeric order, and one spelling per number ("01" and "1" are one class).
            ordered = sorted({int(c) for c in seen})
            return cls(tuple(str(c) for c in ordered), "train")
        return cls(tuple(sorted(seen)), "train")

    @property
    def integer(self) -> bool:
        """True when every class name is an integer (cells ``"01"`` then match class ``"1"``)."""
        return all(_INT_RE.match(c) for c in self.classes)

    def encode(self, values: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(int64 indices, reject reasons): -1 with ``empty_label`` / ``unknown_label``, else the index and ''."""
        raw = cells(values)
        index = {c: i for i, c in enumerate(self.classes)}
        integer = self.integer
        out = np.full(len(raw), -1, dtype=np.int64)
        reasons = np.full(len(raw), "", dtype=object)
        for i, cell in enumerate(raw.tolist()):
            if not cell:
                reasons[i] = EMPTY_LABEL
                continue
            if integer and _INT_RE.match(cell):
                cell = str(int(cell))
            k = index.get(cell)
            if k is None:
                reasons[i] = UNKNOWN_LABEL
            else:
                out[i] = k
        return out, reasons

    def detail(self, cell: Any) -> str:
        """The reject detail for a cell ``encode`` refused (names the vocabulary and where it came from)."""
        shown = ", ".join(self.classes[:20]) + (", ..." if len(self.classes) > 20 else "")
        where = "the classes option" if self.source == "option" else "the training split"
        value = _cell(cell)
        if not value:
            return "empty label"
        return f"label {value!r} is not one of the {len(self.classes)} classes from {where} ({shown})"

    def describe(self) -> dict[str, Any]:
        """The index entry of this vocabulary: ``{"classes": [...], "classes_from": "option" | "train"}``."""
        return {"classes": list(self.classes), "classes_from": self.source}

    @classmethod
    def from_index(cls, label_desc: dict[str, Any]) -> LabelVocab:
        """The vocabulary a split's index recorded (for predict and for later splits)."""
        return cls(tuple(str(c) for c in label_desc.get("classes") or ()), label_desc.get("classes_from", "train"))
