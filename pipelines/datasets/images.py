"""Image dataset kinds: Fashion-MNIST and MNIST (IDX files), scikit-learn's digits, an image folder.

Each reads its raw splits into ``sample_id``/``x``/label columns (or, for an image
folder, paths that a shard task decodes); the stage functions that extract features
and augment live in ``shardtrain.stages.images``. An image folder's class list is one
:class:`~shardtrain.core.labels.LabelVocab` (``classes``, else the training split)
applied to every split, and its decode options (color, resolved size) are fitted on
the training split and recorded in the index under ``transform``, which predict reuses.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.validation import in_range
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import FASHION_MNIST_FILES, MNIST_FILES, FileSet, file_fingerprint, locate
from shardtrain.core.labels import LabelVocab
from shardtrain.readers.imagefolder import Annotations, DecodeOptions, ImageFolderOptions
from shardtrain.shards import storage
from shardtrain.shards.storage import Location
from shardtrain.stages import images as stage

if TYPE_CHECKING:
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.stages.runner import SplitJob

# Fashion-MNIST's coarse groups for the multitask preset. A dress is worn on the upper
# body too, so it joins the tops.
COARSE_CLASSES = ["tops", "bottoms", "footwear", "bags"]
FASHION_COARSE = np.array([0, 1, 0, 0, 0, 2, 0, 2, 3, 2], dtype=np.int64)
DIGIT_CLASSES = [str(i) for i in range(10)]
log = logging.getLogger("shardtrain")

Split = tuple[dict[str, Any], dict[str, Any], DecodeOptions | None]  # rows, label description, decode step


def fixed_classes(classes: list[str]) -> dict[str, Any]:
    """The index label entry of a kind whose classes are fixed by the dataset itself."""
    return {"classes": list(classes), "classes_from": "dataset"}


class _Options(BaseModel):
    """Base of the image datasets' own options models."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _ImageDataset(Dataset):
    """Shared prepare/augment planning of the image kinds; subclasses read their splits."""

    modality: ClassVar[str] = "image"
    augmentable: ClassVar[bool] = True

    def read_split(self, cfg: Config, plan: PreparePlan, split: str) -> Split:
        """One split's raw rows, their label descriptions, and the decode step (or None)."""
        raise NotImplementedError

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """One job per split: raw rows -> (decode) -> features."""
        return [stage.prepare_job(cfg, split, *self.read_split(cfg, plan, split)) for split in plan.splits]

    def augment_jobs(self, cfg: Config, prepare_dir: Path) -> list[SplitJob]:
        """The training split's raw rows -> (decode) -> originals + augmented copies -> features."""
        return [stage.augment_job(cfg, *self.read_split(cfg, self.plan(cfg), "train"), prepare_dir)]

    def after_augment(self, cfg: Config, target: Path, indexes: dict[str, Any]) -> None:
        """Write the originals-beside-copies preview."""
        stage.write_preview(cfg, target)


class _IdxDataset(_ImageDataset):
    """An MNIST-like dataset stored as four IDX files (train/t10k images and labels)."""

    files: ClassVar[FileSet]
    classes: ClassVar[list[str]]

    def plan(self, cfg: Config) -> PreparePlan:
        """Locate the four IDX files (local or on a store) and fingerprint them."""
        files = locate(self.files, self.data_dir)
        prints = {name: file_fingerprint(p) for name, p in files.items()}
        return PreparePlan(("train", "test"), tuple(sorted(prints.values())), files, prints)

    def labels(self, labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        """Label columns and their descriptions (one ``label`` column)."""
        return {"label": labels}, {"label": fixed_classes(self.classes)}

    def label_maps(self) -> tuple[tuple[str, tuple[int, ...] | None], ...]:
        """The label columns a shard task derives from the IDX label: ``(name, lookup table or None)``."""
        return (("label", None),)

    def read_split(self, cfg: Config, plan: PreparePlan, split: str) -> Split:
        """Plan one split from its IDX headers: ranges of records that each shard task reads itself."""
        prefix = "train" if split == "train" else "t10k"
        images, labels = (plan.files[f"{prefix}-images-idx3-ubyte.gz"], plan.files[f"{prefix}-labels-idx1-ubyte.gz"])
        ids = dict(zip(plan.files.values(), _identities(plan)))
        source = stage.idx_source(images, labels, self.label_maps(), cfg.prepare.block_bytes,
                                  (ids.get(images, ""), ids.get(labels, "")))
        _, label_desc = self.labels(np.zeros(0, dtype=np.int64))
        return source, label_desc, None

    def predict_job(self, cfg: Config, fitted: dict[str, Any], path: Path) -> SplitJob:
        """An IDX images file (its ``-labels-idx1-ubyte[.gz]`` beside it optional), or a folder with one such pair."""
        from shardtrain.readers.idx import read_idx_pair

        images_path, labels_path = predict_idx_files(path if _is_remote(path) else Path(path))
        if labels_path is not None:
            images, labels = read_idx_pair(images_path, labels_path)
        else:
            from shardtrain.readers.idx import IMAGES_MAGIC, read_idx

            images, labels = read_idx(images_path), None
            if images.dtype != np.uint8 or images.ndim != 3:
                raise ShardtrainError(f"{storage.redact(images_path)}: expected IDX magic {IMAGES_MAGIC} (uint8, 3 dims), got "
                                      f"{images.dtype} with {images.ndim} dims")
        want = (fitted.get("transform") or {}).get("image_shape") or [28, 28]
        if list(images.shape[1:]) != list(want):
            raise ShardtrainError(f"{storage.redact(images_path)}: images are {images.shape[1]}x{images.shape[2]}, the run was "
                                  f"trained on {want[0]}x{want[1]}")
        source: dict[str, Any] = {"sample_id": np.arange(len(images), dtype=np.int64), "x": images}
        label_desc = {k: v for k, v in (fitted.get("labels") or {}).items()}
        if labels is not None:
            y = labels.astype(np.int64)
            y = np.where(y < len(self.classes), y, -1)  # a value outside the classes is unscored, not a reject
            cols, _ = self.labels(np.where(y >= 0, y, 0))
            source.update({k: np.where(y >= 0, v, -1) for k, v in cols.items()})
        return stage.prepare_job(cfg, "predict", source, label_desc, None)


def _identities(plan: PreparePlan) -> list[str]:
    """Each located file's fingerprint in ``plan.files`` order (what keys a task's decompression cache)."""
    prints = plan.reader if isinstance(plan.reader, dict) else {}
    return [prints.get(name, "") for name in plan.files]


def _is_remote(location: Any) -> bool:
    """Whether a location is on an object store (a URI other than ``file://``)."""
    return storage.is_uri(location) and not storage.is_local(location)


def _remote_idx_files(path: str) -> tuple[str, str | None]:
    """``predict_idx_files`` for a URI: an images object, or a prefix holding exactly one (listed once per folder)."""
    from shardtrain.readers.idx import TORCHVISION_LAYOUTS

    shown = storage.redact(path)
    if storage.file_size(path) is None:
        found = sorted({str(storage.join(d, name)) for d in (path, *(storage.join(path, *t.split("/"))
                                                                      for t in TORCHVISION_LAYOUTS))
                        for name in storage.listdir(d) if "-images-idx3-ubyte" in name
                        and storage.file_size(storage.join(d, name)) is not None})
        names = {storage.basename(f).removesuffix(".gz") for f in found}
        if len(names) != 1:
            what = ", ".join(storage.basename(f) for f in found) or "none"
            raise ShardtrainError(f"{shown}: expected one *-images-idx3-ubyte[.gz] file, found {what} "
                                  "(name the file to predict)")
        path = min(found, key=lambda f: f.endswith(".gz"))  # the uncompressed one when both are there
    name = storage.basename(path)
    if "-images-idx3-ubyte" not in name:
        raise ShardtrainError(f"{storage.redact(path)}: expected an IDX images file named *-images-idx3-ubyte[.gz]")
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(path)  # the folder of the object, keeping a query (``?endpoint_override=...``)
    parent = urlunsplit((parts.scheme, parts.netloc, parts.path.rsplit("/", 1)[0], parts.query, ""))
    stem = name.split("-images-idx3-ubyte")[0]
    labels = [str(storage.join(parent, f"{stem}-labels-idx1-ubyte{s}")) for s in ("", ".gz")]
    return path, next((f for f in labels if storage.file_size(f) is not None), None)


def predict_idx_files(path: Location) -> tuple[Location, Location | None]:
    """The images file to predict and its labels file when one lies beside it (else None).

    ``path`` is a ``*-images-idx3-ubyte[.gz]`` file, or a folder holding exactly one such
    file (torchvision's ``raw/`` layouts included); either may be a URI on a store.
    """
    from shardtrain.readers.idx import TORCHVISION_LAYOUTS

    if _is_remote(path):
        return _remote_idx_files(str(path))
    path = Path(path)
    if path.is_dir():
        found = sorted({p for d in (path, *(path / t for t in TORCHVISION_LAYOUTS))
                        for p in d.glob("*-images-idx3-ubyte*") if p.is_file()})
        names = {p.name.removesuffix(".gz") for p in found}
        if len(names) != 1:
            what = ", ".join(p.name for p in found) or "none"
            raise ShardtrainError(f"{path}: expected one *-images-idx3-ubyte[.gz] file, found {what} "
                                  "(name the file to predict)")
        path = min(found, key=lambda p: p.suffix == ".gz")  # the uncompressed one when both are there
    if not path.is_file():
        raise ShardtrainError(f"{path}: IDX images file not found")
    if "-images-idx3-ubyte" not in path.name:
        raise ShardtrainError(f"{path}: expected an IDX images file named *-images-idx3-ubyte[.gz]")
    stem = path.name.split("-images-idx3-ubyte")[0]
    labels = [path.parent / f"{stem}-labels-idx1-ubyte{s}" for s in ("", ".gz")]
    return path, next((p for p in labels if p.is_file()), None)


class FashionMnistOptions(_Options):
    """``coarse`` adds a second label column (tops, bottoms, footwear, bags) for the multitask model."""

    coarse: bool = False


@register
class FashionMnist(_IdxDataset):
    """Zalando Fashion-MNIST, 60,000 + 10,000 28x28 grayscale images, 10 classes."""

    files: ClassVar[FileSet] = FASHION_MNIST_FILES
    classes: ClassVar[list[str]] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                    "Sneaker", "Bag", "Ankle boot"]
    description: ClassVar[str] = "Zalando Fashion-MNIST, 60,000 + 10,000 28x28 grayscale images, 10 classes"
    name: Literal["fashion-mnist"] = "fashion-mnist"
    options: FashionMnistOptions = FashionMnistOptions()

    def labels(self, labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        """``label``, or ``label_class`` + ``label_coarse`` with ``options.coarse``."""
        if not self.options.coarse:
            return super().labels(labels)
        cols = {"label_class": labels, "label_coarse": FASHION_COARSE[labels]}
        return cols, {"label_class": fixed_classes(self.classes), "label_coarse": fixed_classes(COARSE_CLASSES)}

    def label_maps(self) -> tuple[tuple[str, tuple[int, ...] | None], ...]:
        """``label``, or ``label_class`` + ``label_coarse`` (looked up in ``FASHION_COARSE``) with ``options.coarse``."""
        if not self.options.coarse:
            return super().label_maps()
        return (("label_class", None), ("label_coarse", tuple(int(c) for c in FASHION_COARSE)))


class MnistOptions(_Options):
    """MNIST has no options."""


@register
class Mnist(_IdxDataset):
    """LeCun et al. MNIST handwritten digits, 60,000 + 10,000 28x28 images."""

    files: ClassVar[FileSet] = MNIST_FILES
    classes: ClassVar[list[str]] = DIGIT_CLASSES
    description: ClassVar[str] = "LeCun et al. MNIST handwritten digits, 60,000 + 10,000 28x28 images"
    name: Literal["mnist"] = "mnist"
    options: MnistOptions = MnistOptions()


class DigitsOptions(_Options):
    """``test_fraction`` of each class goes to the test split (seeded by ``seed``)."""

    test_fraction: Annotated[float, in_range(gt=0, lt=1)] = 0.2


@register
class Digits(_ImageDataset):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images; offline)."""

    description: ClassVar[str] = "scikit-learn's bundled 8x8 handwritten digits (1,797 images; offline)"
    name: Literal["digits"] = "digits"
    options: DigitsOptions = DigitsOptions()

    def plan(self, cfg: Config) -> PreparePlan:
        """No files: the data ships with scikit-learn, so its version is the input's identity."""
        import sklearn

        return PreparePlan(("train", "test"), (f"sklearn-{sklearn.__version__}", self.options.test_fraction))

    def read_split(self, cfg: Config, plan: PreparePlan, split: str) -> Split:
        """The digits, split train/test stratified by a seeded per-class permutation."""
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 intensities -> 0..255 so the same ``pixels`` scale (1/255) applies.
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        labels = digits.target.astype(np.int64)
        rng = np.random.default_rng(cfg.seed)
        is_test = np.zeros(len(labels), dtype=bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            n_test = int(round(len(idx) * self.options.test_fraction))
            is_test[rng.permutation(idx)[:n_test]] = True
        keep = np.flatnonzero(is_test if split == "test" else ~is_test)
        return ({"sample_id": keep.astype(np.int64), "x": images[keep], "label": labels[keep]},
                {"label": fixed_classes(DIGIT_CLASSES)}, None)




# No ``recipe``: with ``data.batch_size: auto`` the generic defaults (a 512-512 MLP, AdamW
# 1e-3, 10 epochs) matched or beat a tuned one-layer recipe on Fashion-MNIST written out
# as a messy class-per-folder tree (3,000 train / 1,000 test images: 0.849 test accuracy
# against 0.837, LogisticRegression 0.823; 300 / 100: 0.78 against 0.76, LogisticRegression 0.78).


@register
class ImageFolder(_ImageDataset):
    """PNG/JPEG files: an annotations CSV (path, label) or one subfolder per class (torchvision ImageFolder)."""

    description: ClassVar[str] = "PNG/JPEG files: an annotations CSV (path, label) or one subfolder per class"
    name: Literal["image-folder"] = "image-folder"
    options: ImageFolderOptions

    def _path(self, value: str | None) -> Location | None:
        """A configured path or URI, relative ones resolved against ``data_dir`` (itself maybe a URI) when set."""
        if value is None:
            return None
        if storage.is_uri(value):
            return storage.local_path(value) or value
        path = Path(value).expanduser()
        if not self.data_dir or path.is_absolute():
            return path
        if storage.is_uri(self.data_dir) and not storage.is_local(self.data_dir):
            return storage.join(self.data_dir, *path.parts)
        return (storage.local_path(self.data_dir) or Path(self.data_dir)).expanduser() / path

    def _sources(self) -> dict[str, tuple[str, Location, Location | None]]:
        """Per split: ``("csv", csv, image root or None)`` or ``("folders", root, None)``."""
        o = self.options
        root, test_root = self._path(o.root), self._path(o.test_root)
        out = {"train": ("csv", self._path(o.csv), root) if o.csv else ("folders", root, None)}
        if o.test_csv:
            out["test"] = ("csv", self._path(o.test_csv), test_root or root)
        elif test_root is not None:
            out["test"] = ("folders", test_root, None)
        return out  # type: ignore[return-value]

    def plan(self, cfg: Config) -> PreparePlan:
        """Check the CSVs / folders exist and fingerprint them (a folder by its listing: names, sizes, times)."""
        from shardtrain.core.hashing import fingerprint
        from shardtrain.readers.imagefolder import read_class_folders

        sources = self._sources()
        inputs = []
        for split, (layout, path, _) in sources.items():
            if layout == "csv":
                if storage.file_size(path) is None:
                    raise ShardtrainError(f"{storage.redact(path)}: annotations CSV not found")
                inputs.append(file_fingerprint(path))
                continue
            ann = read_class_folders(path)
            # A store's listing carries each object's size and mtime; locally each file is stat'ed.
            listed = ann.stats or [_stat(p) for p in ann.columns["path"]]
            stats = [(o, *st) for o, st in zip(ann.origin, listed)]
            inputs.append(f"{split}-folders:{len(stats)}:{fingerprint(stats)}")
        return PreparePlan(tuple(sources), tuple(inputs), {s: src[1] for s, src in sources.items()}, sources)

    def _read(self, source: tuple[str, Location, Location | None], strict: bool = True) -> Annotations:
        """One split's listing (CSV rows, or the class folders)."""
        from shardtrain.readers.imagefolder import read_annotations, read_class_folders

        layout, path, img_root = source
        o = self.options
        if layout == "folders":
            ann = read_class_folders(path)
            if ann.ignored:
                log.info("%s: %d non-image file(s) ignored", storage.redact(path), ann.ignored)
            return ann
        return read_annotations(path, img_root, o.path_col, o.label_col, header=o.header, delimiter=o.delimiter,
                                require_label=strict)

    def _fit(self, train: Annotations) -> tuple[LabelVocab, DecodeOptions]:
        """The vocabulary (``classes``, else the kept training labels) and the decode options, from train only."""
        from shardtrain.readers.imagefolder import kept_cells, resolve_decode

        return LabelVocab.fit(kept_cells(train), self.options.classes), resolve_decode(self.options, train)

    def prepare_jobs(self, cfg: Config, plan: PreparePlan, executor: str) -> list[SplitJob]:
        """One job per split, every split labelled by the training split's vocabulary and decoded alike."""
        from shardtrain.readers.imagefolder import encode_labels

        anns = {split: self._read(src) for split, src in plan.reader.items()}
        vocab, decode = self._fit(anns["train"])
        return [stage.prepare_job(cfg, split, encode_labels(ann, vocab), {"label": vocab.describe()}, decode)
                for split, ann in anns.items()]

    def augment_jobs(self, cfg: Config, prepare_dir: Path) -> list[SplitJob]:
        """The training rows, with the vocabulary and decode options the prepare index recorded."""
        import json

        from shardtrain.readers.imagefolder import encode_labels
        from shardtrain.shards.format import INDEX_NAME

        train = self._read(self._sources()["train"])
        index_path = prepare_dir / "train" / INDEX_NAME
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        if "transform" in index and "label" in index.get("labels", {}):
            vocab = LabelVocab.from_index(index["labels"]["label"])
            decode = DecodeOptions.from_transform(index["transform"])
        else:
            vocab, decode = self._fit(train)
        return [stage.augment_job(cfg, encode_labels(train, vocab), {"label": vocab.describe()}, decode,
                                  prepare_dir)]

    def predict_job(self, cfg: Config, fitted: dict[str, Any], path: Path) -> SplitJob:
        """A CSV like the training one (label column optional), or a folder: class-per-folder, else flat.

        A CSV's image paths resolve against its own directory, unless it is the run's own
        ``csv`` or ``test_csv`` (then against that split's image root). A folder is read
        class-per-folder when a subfolder is named after a fitted class, else as a flat
        folder of unlabelled images (every image below it, sorted). Images are decoded with
        the training index's ``transform``; labels outside the classes are -1, not rejects.
        """
        from shardtrain.readers.imagefolder import (encode_labels, has_class_folders, read_annotations,
                                                    read_class_folders)

        if "transform" not in fitted or "label" not in (fitted.get("labels") or {}):
            raise ShardtrainError(f"dataset {self.name}: the run's prepare index has no decode transform "
                                  "(prepared by an older shardtrain?); re-run --stage prepare")
        vocab = LabelVocab.from_index(fitted["labels"]["label"])
        decode = DecodeOptions.from_transform(fitted["transform"])
        if _is_remote(path):  # on a store: an annotations CSV object, else a folder (prefix) of images
            o = self.options
            if storage.file_size(path) is not None:
                ann = read_annotations(path, None, o.path_col, o.label_col, header=o.header, delimiter=o.delimiter,
                                       require_label=False)
            elif storage.listdir(path):
                ann = read_class_folders(path, labelled=has_class_folders(path, vocab.classes))
            else:
                raise ShardtrainError(f"{storage.redact(path)}: not found (give an annotations CSV or an image folder)")
            return stage.prepare_job(cfg, "predict", encode_labels(ann, vocab, strict=False),
                                     {"label": vocab.describe()}, decode)
        path = Path(path)
        if path.is_dir():
            ann = read_class_folders(path, labelled=has_class_folders(path, vocab.classes))
        elif path.is_file():
            root = next((src[2] for src in self._sources().values()
                         if src[0] == "csv" and isinstance(src[1], Path) and src[1].resolve() == path.resolve()),
                        None)
            o = self.options
            ann = read_annotations(path, root, o.path_col, o.label_col, header=o.header, delimiter=o.delimiter,
                                   require_label=False)
        else:
            raise ShardtrainError(f"{path}: not found (give an annotations CSV or an image folder)")
        return stage.prepare_job(cfg, "predict", encode_labels(ann, vocab, strict=False),
                                 {"label": vocab.describe()}, decode)


def _stat(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a listed file; (-1, -1) when it is gone or was rejected ('' path)."""
    try:
        st = Path(path).stat() if path else None
    except OSError:
        st = None
    return (st.st_size, st.st_mtime_ns) if st else (-1, -1)
