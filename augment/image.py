"""Image augmentation: serialisable albumentations pipelines, seeded per sample, and GPU batch ops.

Offline copies (the ``augment`` stage). A pipeline is albumentations' own dict form
(``A.to_dict(compose)``, or just its ``"transform"`` node), loaded with
:func:`load_pipeline`. Each augmented copy is drawn from generators reseeded from a
64-bit hash of ``(seed, sample_id, copy)``, so a copy's bytes do not depend on batch
boundaries, order, block or worker. We reseed through ``Compose.set_random_state``
with one shared numpy + Python generator pair rather than ``set_random_seed``:
albumentations 2.0.8's ``set_random_seed`` gives every child transform its *own*
generator seeded with the *same* value, so e.g. a flip and an affine with equal ``p``
always fire together.

On-device copies (training). :class:`BatchAugment` shifts, flips, adds noise to and
erases a dense (B, F) batch on its own device, seeded from ``(seed, step)``.

Example::

    aug = ImageAugmenter(load_pipeline(spec), copies=2, seed=0)
    out = aug({"sample_id": ids, "x": images, "label": y})   # 3 rows per input row
"""

from __future__ import annotations

import difflib
import functools
import json
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shardtrain.core.errors import ShardtrainError
from shardtrain.core.seeding import chain_key, stream

if TYPE_CHECKING:
    import albumentations as A
    import torch

AUG_ID_SHIFT = 32  # an augmented copy's sample_id is source_id + aug_index * 2**32

# The pipeline an image kind uses when ``augment.copies > 0`` and ``augment.pipeline`` is
# null: small shifts (up to 6% of each side), scales (+-5%) and rotations (+-8 degrees),
# each copy 70% of the time, filled with black. No flips: a flipped digit, letter or
# arrow is another class; a preset that knows its classes are symmetric adds one (the
# fashion-mnist preset does). Percentages, not pixels, so the same default suits 8x8
# digits and 224x224 photos.
DEFAULT_PIPELINE: dict[str, Any] = {
    "transform": {
        "__class_fullname__": "Compose",
        "transforms": [
            {"__class_fullname__": "Affine", "translate_percent": [-0.06, 0.06], "scale": [0.95, 1.05],
             "rotate": [-8, 8], "p": 0.7},
        ],
    }
}


def sample_seeds(seed: int, sample_ids: Any, copies: Any) -> np.ndarray:
    """64-bit seeds, one per (sample_id, copy) pair, from ``(seed, sample_id, copy)`` alone (uint64)."""
    return chain_key(seed, sample_ids, copies)


class _Reseeder:
    """One numpy PCG64 + one ``random.Random`` shared by a Compose, reset per sample in ~10 us.

    Setting the PCG64 state directly skips SeedSequence (~25 us); the 64-bit key is
    already well mixed, so we spread it over the 128-bit state and odd increment.
    """

    def __init__(self) -> None:
        self.bitgen = np.random.PCG64(0)
        self.numpy = np.random.Generator(self.bitgen)
        self.python = random.Random(0)

    @staticmethod
    def words(keys: np.ndarray) -> list[list[int]]:
        """Four well-mixed 64-bit words per key (uint64 (N,)), computed for a whole batch at once."""
        return stream(keys[:, None], np.arange(4)).tolist()  # (N, 4): numbers 0..3 of each key's stream

    def reset(self, key: int, words: list[int] | None = None) -> None:
        """Put both generators in the state that ``key`` (a uint64) determines; ``words`` = ``words(key)``."""
        w0, w1, w2, w3 = words if words is not None else self.words(np.array([key], dtype=np.uint64))[0]
        self.bitgen.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                             "state": {"state": (w0 << 64) | w1, "inc": ((w2 << 64) | w3) | 1}}
        self.python.seed(key)


def _read_spec(path: Path) -> Any:
    """A pipeline spec from a .json or .yaml file, failing with the file name."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShardtrainError(f"{path}: cannot read augmentation pipeline ({exc.strerror})") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = path.suffix.lstrip(".") or "YAML"
        raise ShardtrainError(f"{path}: invalid {kind} ({str(exc).splitlines()[0]})") from None


def _first_error(exc: Exception) -> str:
    """One line out of an albumentations / pydantic construction error."""
    cause = exc.__cause__ or exc.__context__  # albumentations re-raises pydantic's ValidationError
    errors = getattr(exc, "errors", None) or getattr(cause, "errors", None)
    if callable(errors):
        try:
            e = errors()[0]
            loc = ".".join(str(p) for p in e.get("loc", ()))
            return f"{loc + ': ' if loc else ''}{e.get('msg')} (got {e.get('input')!r})"
        except (IndexError, TypeError, AttributeError):
            pass
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _instantiate(node: dict[str, Any], source: str, where: str) -> Any:
    """``A.from_dict`` on one node, turning bad arguments (errors and ignored-arg warnings) into errors."""
    import albumentations as A

    name = node["__class_fullname__"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            built = A.from_dict({"transform": node})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ShardtrainError(f"{source}: transform '{name}' at {where}: {_first_error(exc)}") from None
    for w in caught:
        msg = str(w.message)
        if "not valid for transform" in msg:
            raise ShardtrainError(f"{source}: transform '{name}' at {where}: {msg}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return built


def _validate(node: Any, source: str, where: str) -> None:
    """Walk a transform tree: known names, an explicit ``p`` and buildable arguments on every leaf."""
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY, shorten_class_name

    if not isinstance(node, Mapping) or not isinstance(node.get("__class_fullname__"), str):
        raise ShardtrainError(f"{source}: {where} must be a mapping with '__class_fullname__' (got {node!r})")
    name = node["__class_fullname__"]
    if shorten_class_name(name) not in SERIALIZABLE_REGISTRY:
        close = difflib.get_close_matches(shorten_class_name(name), list(SERIALIZABLE_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ShardtrainError(f"{source}: unknown albumentations transform '{name}' at {where}{hint}")
    if "transforms" in node:
        children = node["transforms"]
        if not isinstance(children, list):
            raise ShardtrainError(f"{source}: transform '{name}' at {where}: 'transforms' must be a list")
        for i, child in enumerate(children):
            _validate(child, source, f"{where}.transforms[{i}]")
        return
    if "p" not in node:
        raise ShardtrainError(f"{source}: transform '{name}' at {where}: give its probability 'p' explicitly")
    _instantiate(dict(node), source, where)


def load_pipeline(spec: Mapping[str, Any] | str | Path | A.BaseCompose | None) -> A.Compose:
    """Build an ``A.Compose`` from albumentations' dict form, a .json/.yaml file of it, or None (default).

    Accepts the full ``A.to_dict`` output (``{"__version__", "transform"}``) or its
    ``transform`` node; a non-Compose root is wrapped in a Compose. Unknown transform
    names, missing ``p`` and bad arguments raise ShardtrainError naming the transform
    and where it sits (``transform.transforms[1]``).
    """
    import albumentations as A

    if isinstance(spec, A.Compose):
        return spec
    source = "augment.pipeline"
    if isinstance(spec, (str, Path)):
        source = str(spec)
        spec = _read_spec(Path(spec))
    if spec is None:
        spec = DEFAULT_PIPELINE
    if not isinstance(spec, Mapping):
        raise ShardtrainError(f"{source}: expected a mapping (albumentations' dict form), got {type(spec).__name__}")
    node = spec.get("transform", spec)
    _validate(node, source, "transform")
    built = _instantiate(dict(node), source, "transform")
    return built if isinstance(built, A.Compose) else A.Compose([built])


class ImageAugmenter:
    """Callable stage (Ray ``map_batches`` class): original + ``copies`` augmented copies per row.

    ``pipeline`` is anything :func:`load_pipeline` takes (None: :data:`DEFAULT_PIPELINE`).
    A row whose ``reject_reason`` is set is passed through once, uncopied. The output keeps each input
    row (``aug_index`` 0) followed by its copies 1..K with ``sample_id = source_id +
    aug_index * 2**32``; other columns are repeated. Images are uint8 (N, H, W) or
    (N, H, W, 3) and must keep their shape through the pipeline.
    """

    def __init__(self, pipeline: Any = None, copies: int = 1, seed: int = 0) -> None:
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
            raise ShardtrainError(f"config key 'augment.copies': expected an integer >= 0, got {copies!r}")
        self.compose = load_pipeline(pipeline)
        self.copies, self.seed = copies, int(seed)
        self._rng = _Reseeder()
        self.compose.set_random_state(self._rng.numpy, self._rng.python)

    def augment_one(self, image: np.ndarray, sample_id: int, copy: int) -> np.ndarray:
        """Copy number ``copy`` (>= 1) of one uint8 image; a pure function of (seed, sample_id, copy)."""
        self._rng.reset(int(sample_seeds(self.seed, sample_id, copy)[0]))
        return self.compose(image=image)["image"]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Expand a batch: each row, then its ``copies`` augmented copies."""
        if "aug_index" in batch or "source_id" in batch:
            raise ShardtrainError("augment: the input already has aug_index/source_id columns (augmented twice?)")
        x = np.asarray(batch["x"])
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise ShardtrainError(f"augment: column 'x' must be uint8 images (N, H, W[, C]), got {x.dtype} {x.shape}")
        ids = np.asarray(batch["sample_id"], dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= 1 << AUG_ID_SHIFT):
            raise ShardtrainError(f"augment: sample_id {int(ids.max())} outside [0, 2**32); copy ids would collide")
        # A row already rejected (undecodable, unknown label) stays one row: one reject, not 1 + copies.
        rejected = np.asarray(batch["reject_reason"], dtype=object) != "" if "reject_reason" in batch else None
        per = np.full(len(ids), self.copies + 1, dtype=np.int64)
        if rejected is not None:
            per[rejected] = 1
        rep = np.repeat(np.arange(len(ids)), per)                       # (M,) source row of each output row
        aug = (np.arange(len(rep)) - np.repeat(np.cumsum(per) - per, per)).astype(np.int32)  # (M,) 0 = original
        out = {name: (col.take(rep) if hasattr(col, "take") and not isinstance(col, np.ndarray)
                      else np.asarray(col)[rep])
               for name, col in batch.items() if name not in ("x", "sample_id")}
        xo = x[rep]                                                     # (N*k, H, W[, C]) a copy: input untouched
        todo = np.flatnonzero(aug)                                      # rows that get a fresh copy
        keys = sample_seeds(self.seed, ids[rep][todo], aug[todo])
        for j, key, words in zip(todo.tolist(), keys.tolist(), self._rng.words(keys)):
            self._rng.reset(key, words)
            img = self.compose(image=xo[j])["image"]
            if img.shape != xo[j].shape or img.dtype != np.uint8:
                raise ShardtrainError(
                    f"augment.pipeline: changes images from {xo[j].shape} uint8 to {img.shape} {img.dtype}; "
                    "shards need one fixed shape (add a Resize or drop the crop)")
            xo[j] = img
        ids_out = ids[rep] + (aug.astype(np.int64) << AUG_ID_SHIFT)
        return {"sample_id": ids_out, "source_id": ids[rep], "aug_index": aug, "x": xo, **out}


@functools.lru_cache(maxsize=8)
def _cached_augmenter(spec_json: str, copies: int, seed: int) -> ImageAugmenter:
    """Build each distinct (pipeline, copies, seed) once per process (batches reuse it)."""
    return ImageAugmenter(json.loads(spec_json), copies, seed)


def augment_images(batch: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Stage function: :class:`ImageAugmenter` configured by ``cfg``.

    ``cfg`` is an ImageAugmenter, a full config (``cfg.seed``, ``cfg.augment.copies``,
    ``cfg.augment.pipeline``), or a mapping with ``seed``, ``copies``, ``pipeline``.
    """
    if isinstance(cfg, ImageAugmenter):
        return cfg(batch)
    if hasattr(cfg, "augment"):
        seed, copies, pipeline = cfg.seed, cfg.augment.copies, cfg.augment.pipeline
    else:
        seed, copies, pipeline = cfg.get("seed", 0), cfg.get("copies", 1), cfg.get("pipeline")
    if isinstance(pipeline, (str, Path)):
        pipeline = _read_spec(Path(pipeline))
    return _cached_augmenter(json.dumps(pipeline, sort_keys=True), int(copies), int(seed))(batch)


def preview_grid(originals: np.ndarray, copies: np.ndarray, path: str | Path, n: int = 8, zoom: int = 4,
                 captions: Sequence[str] | None = None, title: str = "") -> Path:
    """Write a PNG grid: one row per image, the original then its K copies, ``zoom``x nearest-neighbour.

    ``originals`` is uint8 (M, H, W[, 3]) and ``copies`` (M, K, H, W[, 3]); the first
    ``n`` rows are drawn, separated by 2-pixel grey gutters. A header names the columns
    (``original``, ``copy 1`` ...); ``captions`` (one per row, e.g. ``"id 17  T-shirt"``)
    label the rows on the left, and ``title`` goes above everything.
    """
    from PIL import Image, ImageDraw, ImageFont

    originals, copies = np.asarray(originals), np.asarray(copies)
    m = min(n, len(originals))
    tiles = np.concatenate([originals[:m, None], copies[:m]], axis=1)   # (m, K+1, H, W[, C])
    if tiles.ndim == 4:
        tiles = tiles[..., None]
    _, cols, h, w, c = tiles.shape
    gap = 2
    grid = np.full((m * (h + gap) + gap, cols * (w + gap) + gap, c), 128, dtype=np.uint8)
    for r in range(m):
        for col in range(cols):
            y, x0 = gap + r * (h + gap), gap + col * (w + gap)
            grid[y:y + h, x0:x0 + w] = tiles[r, col]
    img = Image.fromarray(grid[..., 0] if c == 1 else grid).convert("RGB")
    img = img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST)
    cell_w, cell_h = (w + gap) * zoom, (h + gap) * zoom
    font = ImageFont.load_default(size=max(10, min(14, cell_h // 4)))
    draw = ImageDraw.Draw(img)
    line = font.getbbox("Ag")[3] + 4
    rows = list(captions or [])[:m]
    left = max([int(draw.textlength(t, font=font)) for t in rows], default=0) + (12 if rows else 0)
    top = line + 4 + (line + 4 if title else 0)
    width = max(img.width + left, int(draw.textlength(title, font=font)) + 8 if title else 0)
    canvas = Image.new("RGB", (width, img.height + top), "white")
    canvas.paste(img, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black", font=font)
    header_y = top - line - 2
    for col in range(cols):
        label = "original" if col == 0 else f"copy {col}"
        x = left + gap * zoom + col * cell_w + (w * zoom - draw.textlength(label, font=font)) / 2
        draw.text((x, header_y), label, fill="black", font=font)
    for r, text in enumerate(rows):
        y = top + gap * zoom + r * cell_h + (h * zoom - line) / 2
        draw.text((4, y), text, fill="black", font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def preview_batch(batch: dict[str, Any], path: str | Path, n: int = 8) -> Path:
    """:func:`preview_grid` from an :class:`ImageAugmenter` output batch (rows grouped by source)."""
    aug = np.asarray(batch["aug_index"])
    k = int(aug.max(initial=0)) + 1
    x = np.asarray(batch["x"])
    groups = x[: len(x) // k * k].reshape(-1, k, *x.shape[1:])           # (M, K+1, H, W[, C])
    ids = np.asarray(batch.get("source_id", batch["sample_id"]))[: len(x) // k * k : k]
    return preview_grid(groups[:, 0], groups[:, 1:], path, n=n, captions=[f"id {int(i)}" for i in ids])


def step_seed(seed: int, step: int) -> int:
    """A 63-bit torch seed from (seed, step) (same hash as the offline copies, copy = -1)."""
    return int(sample_seeds(seed, step, -1)[0]) & 0x7FFFFFFFFFFFFFFF


class BatchAugment:
    """Cheap, seeded augmentation of a dense image batch on its own device (CPU or GPU).

    ``__call__(x (B, F) float, step)`` views rows as ``image_shape`` (H, W) or (H, W, C)
    and applies, all vectorised and with no host sync: a random translation of up to
    ``shift`` pixels (one gather; uncovered pixels get ``fill``), a horizontal flip
    with probability 0.5 when ``flip``, random erasing of one rectangle (sides up to
    half the image) with probability ``erase``, and gaussian noise of ``noise_std``.
    Draws come from a ``torch.Generator`` on x's device seeded by ``(seed, step)``: the
    same step gives the same result on the same device type.
    """

    def __init__(self, image_shape: tuple[int, ...], shift: int = 2, flip: bool = False, noise_std: float = 0.0,
                 erase: float = 0.0, seed: int = 0, fill: float = 0.0) -> None:
        if len(image_shape) not in (2, 3) or shift < 0 or noise_std < 0 or not 0.0 <= erase <= 1.0:
            raise ShardtrainError(
                f"data.batch_augment: bad settings (image_shape={tuple(image_shape)}, shift={shift}, "
                f"noise_std={noise_std}, erase={erase})")
        self.h, self.w = int(image_shape[0]), int(image_shape[1])
        self.c = int(image_shape[2]) if len(image_shape) == 3 else 1
        self.shift, self.flip, self.noise_std, self.erase = int(shift), bool(flip), float(noise_std), float(erase)
        self.seed, self.fill = int(seed), float(fill)

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Augmented copy of ``x`` (B, F), F = H * W * C; same shape, dtype and device."""
        import torch

        b, f = x.shape
        h, w, c = self.h, self.w, self.c
        if f != h * w * c:
            raise ShardtrainError(f"data.batch_augment: batch has {f} features, image_shape needs {h * w * c}")
        dev = x.device
        g = torch.Generator(device=dev)
        g.manual_seed(step_seed(self.seed, step))
        img = x.view(b, h, w, c)
        rows = torch.arange(h, device=dev).expand(b, h)                 # (B, H) source row per output row
        cols = torch.arange(w, device=dev).expand(b, w)                 # (B, W)
        if self.flip:
            flipped = torch.rand(b, 1, generator=g, device=dev) < 0.5
            cols = torch.where(flipped, w - 1 - cols, cols)
        if self.shift:
            s = self.shift
            rows = rows + torch.randint(-s, s + 1, (b, 1), generator=g, device=dev)
            cols = cols + torch.randint(-s, s + 1, (b, 1), generator=g, device=dev)
        if self.flip or self.shift:
            inside = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])  # (B, H, W)
            bidx = torch.arange(b, device=dev)[:, None, None]
            img = img[bidx, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]  # (B, H, W, C)
            img = torch.where(inside[..., None], img, torch.full_like(img, self.fill))
        if self.erase > 0:
            hit = torch.rand(b, 1, 1, generator=g, device=dev) < self.erase
            u = torch.rand(b, 4, generator=g, device=dev)
            eh = 1 + (u[:, 0] * (h // 2)).long()                       # (B,) rectangle height in [1, H/2]
            ew = 1 + (u[:, 1] * (w // 2)).long()
            y0 = (u[:, 2] * (h - eh + 1)).long()
            x0 = (u[:, 3] * (w - ew + 1)).long()
            ry = torch.arange(h, device=dev)[None, :]
            rx = torch.arange(w, device=dev)[None, :]
            in_y = (ry >= y0[:, None]) & (ry < (y0 + eh)[:, None])      # (B, H)
            in_x = (rx >= x0[:, None]) & (rx < (x0 + ew)[:, None])      # (B, W)
            mask = hit & in_y[:, :, None] & in_x[:, None, :]            # (B, H, W)
            img = torch.where(mask[..., None], torch.full_like(img, self.fill), img)
        if self.noise_std > 0:
            img = img + self.noise_std * torch.randn(img.shape, generator=g, device=dev, dtype=img.dtype)
        return img.reshape(b, f)

    @classmethod
    def from_config(cls, section: Any, image_shape: tuple[int, ...], seed: int) -> BatchAugment:
        """Build from ``cfg.data.batch_augment`` (shift, flip, noise_std, erase) and the run seed."""
        return cls(image_shape, shift=section.shift, flip=section.flip, noise_std=section.noise_std,
                   erase=section.erase, seed=seed)
