"""Image dataset kinds: Fashion-MNIST and MNIST (IDX files), scikit-learn's digits, an image folder.

Each reads its raw splits into ``sample_id``/``x``/label columns (or, for an image
folder, paths that a shard task decodes); the stage functions that extract features
and augment live in ``shardtrain.stages.images``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.validation import in_range
from shardtrain.datasets.base import Dataset, PreparePlan, register
from shardtrain.datasets.files import FASHION_MNIST_FILES, MNIST_FILES, FileSet, file_fingerprint, locate
from shardtrain.readers.imagefolder import ImageFolderOptions
from shardtrain.stages import images as stage

if TYPE_CHECKING:
    from shardtrain.stages.context import StageConfig as Config
    from shardtrain.stages.runner import SplitJob

# Fashion-MNIST's coarse groups for the multitask preset. A dress is worn on the upper
# body too, so it joins the tops.
COARSE_CLASSES = ["tops", "bottoms", "footwear", "bags"]
FASHION_COARSE = np.array([0, 1, 0, 0, 0, 2, 0, 2, 3, 2], dtype=np.int64)
DIGIT_CLASSES = [str(i) for i in range(10)]

Split = tuple[dict[str, Any], dict[str, Any], ImageFolderOptions | None]  # rows, label description, decode step


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
        """Locate the four IDX files and fingerprint them."""
        files = locate(self.files, self.data_dir)
        return PreparePlan(("train", "test"), tuple(sorted(file_fingerprint(p) for p in files.values())), files)

    def labels(self, labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
        """Label columns and their descriptions (one ``label`` column)."""
        return {"label": labels}, {"label": {"classes": self.classes}}

    def read_split(self, cfg: Config, plan: PreparePlan, split: str) -> Split:
        """Decode one split's IDX pair into uint8 images and int64 labels."""
        from shardtrain.readers.idx import read_idx_pair

        prefix = "train" if split == "train" else "t10k"
        images, labels = read_idx_pair(plan.files[f"{prefix}-images-idx3-ubyte.gz"],
                                       plan.files[f"{prefix}-labels-idx1-ubyte.gz"])
        cols, label_desc = self.labels(labels.astype(np.int64))
        return {"sample_id": np.arange(len(images), dtype=np.int64), "x": images, **cols}, label_desc, None


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
        return cols, {"label_class": {"classes": self.classes}, "label_coarse": {"classes": COARSE_CLASSES}}


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
                {"label": {"classes": DIGIT_CLASSES}}, None)


@dataclass(frozen=True)
class ImageFolderDatasetOptions(ImageFolderOptions):
    """The reader's options plus ``test_csv``: a second annotations file for a test split."""

    test_csv: str | None = None

    def reader(self) -> ImageFolderOptions:
        """The reader's own options (without ``test_csv``)."""
        fields = {k: getattr(self, k) for k in ImageFolderOptions.__dataclass_fields__}
        return ImageFolderOptions(**fields)


@register
class ImageFolder(_ImageDataset):
    """PNG/JPEG files under a root folder listed in an annotations CSV (path, label)."""

    description: ClassVar[str] = "PNG/JPEG files under a root folder listed in an annotations CSV (path, label)"
    name: Literal["image-folder"] = "image-folder"
    options: ImageFolderDatasetOptions

    def plan(self, cfg: Config) -> PreparePlan:
        """Check the annotations CSVs exist and fingerprint them (images are decoded by shard tasks)."""
        csvs = {"train": Path(self.options.csv)}
        if self.options.test_csv:
            csvs["test"] = Path(self.options.test_csv)
        for path in csvs.values():
            if not path.is_file():
                raise ShardtrainError(f"{path}: annotations CSV not found")
        return PreparePlan(tuple(csvs), tuple(file_fingerprint(p) for p in csvs.values()), csvs,
                           self.options.reader())

    def read_split(self, cfg: Config, plan: PreparePlan, split: str) -> Split:
        """The split's annotations (paths + labels); the decode step carries the resolved image size."""
        from shardtrain.readers.imagefolder import read_annotations, resolve_options

        opts = plan.reader
        ann = read_annotations(plan.files[split], opts.root, opts.path_col, opts.label_col,
                               header=opts.header, delimiter=opts.delimiter)
        return dict(ann.columns), {"label": {"classes": ann.classes}}, resolve_options(opts, ann)
