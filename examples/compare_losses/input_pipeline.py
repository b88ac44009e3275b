"""Input pipeline: tfds ``data_source`` + grain, no TensorFlow.

Every dataset is exposed as three random-access sources (``train``, ``validation``, ``test``)
yielding ``{"image": uint8 [H, W, C], "label": int}``; the validation split is a seeded 10% of
the training split, as in Mukhoti et al. 2020. The offline default ``digits`` wraps
scikit-learn's bundled 8×8 digits (1,797 real images) in the same interface, so it flows
through exactly the same batching and preprocessing as a tfds source.

Fashion-MNIST is read from its four original IDX files (``*-idx?-ubyte.gz``), found in
``data_dir`` or where Debian's ``dataset-fashion-mnist`` package installs them, so it works
offline; every file's magic number, dimensions and length are checked, so a truncated or
corrupt file is an error, never a silently short dataset.

Downloads are never attempted unless asked for (``download=True``); a dataset that is not
prepared locally fails at once with a message saying what to do.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import grain
import numpy as np

OFFLINE_DATASET = "digits"
# Read from IDX files on local disk (no tfds, no network).
IDX_DATASETS = ("fashion_mnist",)
TFDS_DATASETS = ("cifar10", "cifar100", "svhn_cropped", "mnist")
DATASETS = (OFFLINE_DATASET, *IDX_DATASETS, *TFDS_DATASETS)
# Where `apt-get install dataset-fashion-mnist` puts the four IDX files.
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# Digits has no official test split: a fixed 20% (independent of the run seed) so that runs
# with different seeds are evaluated on the same images.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


class Source(Protocol):
    """Random-access source of ``{"image", "label"}`` dicts (grain's data-source protocol)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: name, classes, image shape, pixel range."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    pixel_max: float


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three splits of one dataset plus its :class:`DatasetInfo`."""

    train: Source
    validation: Source
    test: Source
    info: DatasetInfo


class ArraySource:
    """In-memory arrays as a random-access source (used for the offline digits)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if len(images) != len(labels):
            raise ValueError("images and labels must have the same length")
        self._images = images
        self._labels = labels

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self._images[index], "label": self._labels[index]}


class SubsetSource:
    """A view of ``source`` restricted to ``indices``; items are read one index at a time
    (batched ``__getitems__`` is not supported by every tfds source, e.g. mock data)."""

    def __init__(self, source: Source, indices: np.ndarray):
        self._source = source
        self._indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._source[int(self._indices[index])]


def split_train_validation(
    num_train: int, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (train, validation) index sets; ``round(val_fraction·N)`` go to val."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(num_train)
    num_val = max(1, round(val_fraction * num_train))
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])


def _digits() -> tuple[ArraySource, ArraySource, DatasetInfo]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]  # values 0..16, [N, 8, 8, 1]
    labels = digits.target.astype(np.int64)
    perm = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
    num_test = round(_DIGITS_TEST_FRACTION * len(labels))
    test, train = np.sort(perm[:num_test]), np.sort(perm[num_test:])
    info = DatasetInfo(OFFLINE_DATASET, 10, (8, 8, 1), 16.0)
    return (
        ArraySource(images[train], labels[train]),
        ArraySource(images[test], labels[test]),
        info,
    )


class IdxError(RuntimeError):
    """An IDX file that is missing, truncated or not what its name says."""


# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_IDX_UBYTE = 0x08


def read_idx(path: str | os.PathLike, *, ndim: int) -> np.ndarray:
    """Reads one gzip-compressed IDX file of unsigned bytes with ``ndim`` dimensions.

    Raises:
      IdxError: the file is not gzip, its magic number is not that of a ``ndim``-dimensional
        unsigned-byte IDX array, or it holds fewer or more bytes than its header declares.
    """
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # gzip reports a truncated stream as EOFError
        raise IdxError(f"{path}: cannot read as a gzip file ({err})") from err
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: {len(data)} bytes, shorter than an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != (_IDX_UBYTE << 8 | ndim):
        raise IdxError(
            f"{path}: magic number 0x{magic:08x}, expected 0x{_IDX_UBYTE << 8 | ndim:08x} "
            f"(unsigned bytes, {ndim} dimension(s))"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise IdxError(
            f"{path}: header declares shape {shape} ({size} bytes) but the file holds "
            f"{len(data) - header} bytes of data (truncated or corrupt)"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _fashion_mnist(data_dir: str | None) -> tuple[ArraySource, ArraySource, DatasetInfo]:
    directory = data_dir or FASHION_MNIST_DEBIAN_DIR
    paths = {k: os.path.join(directory, f) for k, f in FASHION_MNIST_FILES.items()}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise RuntimeError(
            f"Fashion-MNIST IDX files not found: {', '.join(missing)}. Install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass --data_dir with "
            f"a folder holding {', '.join(FASHION_MNIST_FILES.values())}."
        )
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], ndim=3)
        labels = read_idx(paths[f"{split}_labels"], ndim=1)
        if len(images) != len(labels):
            raise IdxError(
                f"{paths[f'{split}_images']} holds {len(images)} images but "
                f"{paths[f'{split}_labels']} holds {len(labels)} labels"
            )
        if images.shape[1:] != (28, 28) or labels.max(initial=0) > 9:
            raise IdxError(
                f"{directory}: {split} images of shape {images.shape[1:]} with labels up to "
                f"{labels.max(initial=0)}; Fashion-MNIST is 28×28 with labels 0-9"
            )
        arrays[split] = (images[..., None], labels.astype(np.int64))
    info = DatasetInfo("fashion_mnist", 10, (28, 28, 1), 255.0)
    return ArraySource(*arrays["train"]), ArraySource(*arrays["test"]), info


def _network_available(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _not_prepared_message(name: str, data_dir: str | None, *, offer_download: bool) -> str:
    where = data_dir or "~/tensorflow_datasets (or $TFDS_DATA_DIR)"
    download = "rerun with --download on a machine with internet access, or " * offer_download
    return (
        f"Dataset {name!r} is not prepared in {where}. Either {download}run "
        f"`tfds build {name} --file_format=array_record` somewhere with internet and copy the "
        f"data directory here (then pass --data_dir), or use the offline default "
        f"--dataset {OFFLINE_DATASET}."
    )


def _tfds(name: str, *, data_dir: str | None, download: bool) -> tuple[Source, Source, DatasetInfo]:
    import tensorflow_datasets as tfds

    if download and not _network_available():
        # A tfds download without network hangs for minutes before failing: fail fast instead.
        raise RuntimeError(
            f"--download was given for {name!r} but there is no network access. "
            + _not_prepared_message(name, data_dir, offer_download=False)
        )
    try:
        train = tfds.data_source(name, split="train", data_dir=data_dir, download=download)
        test = tfds.data_source(name, split="test", data_dir=data_dir, download=download)
    except Exception as err:  # tfds reports a missing or unusable dataset in many ways
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        message = _not_prepared_message(name, data_dir, offer_download=True)
        raise RuntimeError(f"{message} (tfds: {type(err).__name__}: {first_line})") from err
    features = tfds.builder(name, data_dir=data_dir).info.features
    info = DatasetInfo(name, features["label"].num_classes, tuple(features["image"].shape), 255.0)
    return train, test, info


def get_splits(
    name: str,
    *,
    seed: int,
    val_fraction: float = 0.1,
    data_dir: str | None = None,
    download: bool = False,
) -> Splits:
    """Train / validation / test sources for ``name``.

    Args:
      name: ``"digits"`` (offline), ``"fashion_mnist"`` (IDX files on disk) or one of
        :data:`TFDS_DATASETS`.
      seed: seeds the validation split.
      val_fraction: share of the training split held out for validation (post-hoc calibration).
      data_dir: tfds data directory; for ``fashion_mnist`` the folder of its IDX files
        (default: Debian's install location).
      download: allow tfds to download and prepare the dataset (needs network).

    Returns:
      A :class:`Splits`.
    """
    if name == OFFLINE_DATASET:
        train, test, info = _digits()
    elif name == "fashion_mnist":
        train, test, info = _fashion_mnist(data_dir)
    elif name in TFDS_DATASETS:
        train, test, info = _tfds(name, data_dir=data_dir, download=download)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    train_idx, val_idx = split_train_validation(len(train), val_fraction=val_fraction, seed=seed)
    return Splits(SubsetSource(train, train_idx), SubsetSource(train, val_idx), test, info)


@dataclasses.dataclass(frozen=True)
class Batch:
    """A host-local batch: images float32 ``[B, H, W, C]``, labels int32 ``[B]``, mask bool
    ``[B]`` (False on padding rows)."""

    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray


def _stack(items: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {
        "image": np.stack([np.asarray(x["image"]) for x in items]),
        "label": np.asarray([x["label"] for x in items], dtype=np.int32),
    }


def _normalize(images: np.ndarray, pixel_max: float) -> np.ndarray:
    return (images.astype(np.float32) / np.float32(pixel_max) - 0.5) / np.float32(0.25)


def _augment(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop with zero padding and horizontal flip (the CIFAR recipe)."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    out = np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def train_batches(
    source: Source,
    info: DatasetInfo,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    augment: bool = False,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """One epoch of shuffled, full training batches (the incomplete last batch is dropped).

    The order depends only on ``(seed, epoch)``, so a run resumed from a checkpoint sees the
    same batches as an uninterrupted one. Each process gets its contiguous share of every
    global batch of ``batch_size`` rows.
    """
    if batch_size % process_count:
        raise ValueError("batch_size must be divisible by the number of processes")
    local = batch_size // process_count
    ds = grain.MapDataset.source(source).shuffle(seed=seed * 100_003 + epoch)
    rng = np.random.default_rng([seed, epoch, process_index])
    for b in range(len(ds) // batch_size):
        start = b * batch_size + process_index * local
        items = _stack([ds[i] for i in range(start, start + local)])
        images = _augment(items["image"], rng) if augment else items["image"]
        yield Batch(_normalize(images, info.pixel_max), items["label"], np.ones(local, bool))


def eval_batches(
    source: Source,
    info: DatasetInfo,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """All of ``source`` in order, in batches of ``batch_size`` rows; the last batch is padded
    with masked rows so every batch (and every device) has the same shape."""
    if batch_size % process_count:
        raise ValueError("batch_size must be divisible by the number of processes")
    local = batch_size // process_count
    n = len(source)
    for b in range(-(-n // batch_size)):
        start = b * batch_size + process_index * local
        idx = np.arange(start, start + local)
        valid = idx < n
        items = _stack([source[int(i)] for i in np.where(valid, idx, 0)])
        yield Batch(_normalize(items["image"], info.pixel_max), items["label"], valid)
