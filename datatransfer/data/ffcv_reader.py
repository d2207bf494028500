"""FFCV datasets: FFCV loaders over ``.beton`` files, and a prepared dataset folder read like an in-memory one.

The paper-scale runs read ImageNet and the target datasets through FFCV; the mini runs use in-memory
tensors (``datatransfer.data``). Only this module, its pipelines (``ffcv_pipelines``) and the writer
(``ffcv_writer``) know about FFCV.

Every beton the writer writes has the same two fields, so one loader builder serves all of them:

* ``image``: ``RGBImageField``. Grey images are replicated to 3 channels, because FFCV's image field and
  its crop decoders only handle RGB; this triples the storage of grey data (28x28: 2.3 KB an image),
  which is small, and lets RGB models read the same file. ``make_loader(..., grey=True)`` reads
  channel 0 back.
* ``label``: ``IntField``. Its values live in the beton's metadata table, so ``read_labels`` gets all
  labels without decoding an image (ImageNet's 1.28 M labels: one ~30 MB read).

FFCV pitfalls handled here (and in ``ffcv_pipelines``, ``ffcv_writer``):

* importing ``ffcv`` sets torch to 1 thread, and building a Loader or starting an epoch sets it to
  ``num_workers``: the import is lazy (it also costs 7+ s of numba compiling), and both are undone;
* ``Loader`` defaults to ``drop_last=True``: here ``drop_last`` has no default;
* FFCV's ``NormalizeImage`` on a GPU tensor needs cupy: on CUDA we normalise with torch instead;
* a writer worker that raises leaves ``DatasetWriter`` waiting forever: inputs are checked first;
* ffcv's RandomHorizontalFlip takes numba 5-12 s to compile in every process: ours takes <1 s;
* ``Squeeze()`` turns a last batch of one label into a 0-d tensor: we squeeze dim 1 only.

Not seeded: FFCV's random crops and flips (numba's own RNG). The order of a random loader is.
The first epoch of every new loader spends seconds compiling its pipeline (measured here: 3 s grey, 4-6 s centre
crop, 6-10 s random resized crop + flip), so ``BetonDataset`` builds each kind of loader once per process and
re-aims it (``FFCVLoader.retarget``) at each row's classes and seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np
import torch

from datatransfer.data.ffcv_pipelines import (
    TorchUpsample,
    grey_pipeline,
    label_pipeline,
    rgb_pipeline,
)
from datatransfer.errors import DataError

if TYPE_CHECKING:  # ffcv is an optional dependency, imported lazily (see import_ffcv)
    from ffcv.loader import Loader

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # on the [0, 1] scale, like torchvision
IMAGENET_STD = (0.229, 0.224, 0.225)

Order = Literal["random", "quasi_random", "sequential"]


def import_ffcv() -> None:
    """Import ffcv without letting it change torch's thread count (it sets 1 at import).

    Every function here calls this; call it first to pay the import (7+ s, numba compiling) up front.
    """
    threads = torch.get_num_threads()
    import ffcv.loader  # noqa: F401
    import ffcv.writer  # noqa: F401

    torch.set_num_threads(threads)


def default_workers() -> int:
    return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------
# Reading


def read_labels(path: Union[str, Path]) -> np.ndarray:
    """All labels of a beton, in file order, read from its metadata table (no image is decoded)."""
    import_ffcv()
    from ffcv.reader import Reader

    reader = Reader(str(path))
    # Metadata columns are positional ('f0', 'f1', ...) in the order the fields were written.
    column = f"f{reader.field_names.index('label')}"
    return np.array(reader.metadata[column], dtype=np.int64)


def class_subset_indices(labels: np.ndarray, keep_classes: Sequence[int]) -> np.ndarray:
    """Indices (ascending, int64) of the examples whose label is one of ``keep_classes``.

    Use with ``make_loader(indices=...)`` to train a source model on a class subset of a beton.
    """
    keep = np.unique(np.asarray(keep_classes, dtype=np.int64))
    if keep.size == 0:
        raise ValueError("keep_classes is empty")
    return np.flatnonzero(np.isin(np.asarray(labels), keep)).astype(np.int64)


class FFCVLoader:
    """An FFCV ``Loader`` that yields ``(images, labels)`` and leaves torch's thread count alone.

    FFCV sets torch's threads to ``num_workers`` in the calling thread on every ``iter()``;
    this wrapper puts back the count the caller had when the loader was made.
    """

    def __init__(self, loader: "Loader", decoder, torch_threads: int):
        self.loader = loader  # the underlying ffcv.loader.Loader
        # What sets the resolution: a crop decoder (its output_size), a TorchUpsample (its size), None for grey.
        self._decoder = decoder
        self._torch_threads = torch_threads

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        it = iter(self.loader)
        torch.set_num_threads(self._torch_threads)
        return it

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def resolution(self) -> Optional[int]:
        if self._decoder is None:
            return None
        if isinstance(self._decoder, TorchUpsample):
            return self._decoder.size
        return int(self._decoder.output_size[0])

    def set_resolution(self, resolution: int) -> None:
        """Change the output side for the next epoch (progressive resizing, as ffcv-imagenet does).

        Takes effect at the next ``iter()``: FFCV re-plans its buffers from the decoder every epoch.
        """
        if self._decoder is None:
            raise ValueError("a grey loader yields images at their stored size; it has no resolution")
        if isinstance(self._decoder, TorchUpsample):
            self._decoder.size = int(resolution)
        else:
            self._decoder.output_size = (int(resolution), int(resolution))

    def set_epoch(self, epoch: int) -> None:
        """The next ``iter()`` is epoch ``epoch``: a random order is then seeded by ``seed + epoch`` (resuming)."""
        self.loader.next_epoch = int(epoch)

    def retarget(self, indices: np.ndarray, seed: int) -> None:
        """Aim this loader at other examples (``indices``) with another order seed, from epoch 0.

        Reuses the compiled pipeline: building a new loader would compile it again (seconds, see module doc).
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            raise ValueError("indices is empty")
        loader = self.loader
        loader.indices = loader.traversal_order.indices = indices
        loader.seed = loader.traversal_order.seed = int(seed) % 2**31  # quasi_random computes in int64
        if hasattr(loader.traversal_order, "prepare_data_structures"):  # quasi_random: pages of the new indices
            loader.traversal_order.prepare_data_structures()
        loader.next_epoch = 0
        loader.first_traversal_order = loader.next_traversal_order()  # what len() counts


def make_loader(path: Union[str, Path], *, batch_size: int, train: bool, drop_last: bool,
                resolution: Optional[int] = None, indices: Optional[np.ndarray] = None,
                mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                grey: bool = False, num_workers: Optional[int] = None, order: Optional[Order] = None,
                seed: int = 0, device: Union[str, torch.device] = "cpu", channels_last: bool = True,
                fp16: bool = False, os_cache: bool = True, batches_ahead: int = 3,
                decoder: Optional[str] = None, flip: Optional[bool] = None) -> FFCVLoader:
    """An FFCV loader over a beton written by ``ffcv_writer``; yields (images (B, C, H, W), labels int64 (B,)).

    RGB (``grey=False``): ``decoder`` random_resized_crop (the default when ``train``), center_crop (224/256 of
    the short side, resized to ``resolution``; the default otherwise) or upsample (the stored size, which must be
    the same for every image, nearest-neighbour upsampled to ``resolution``: CIFAR); then a horizontal flip
    (``flip``, default: ``train``) and normalisation with ``mean``/``std`` given on the [0, 1] scale.
    Output is float32 (float16 with ``fp16``), channels-last in memory unless ``channels_last=False``.

    Grey (``grey=True``, for betons written from (N, H, W) arrays): no augmentation and no resizing;
    yields float32 (B, 1, H, W) equal to ``datatransfer.data``'s ``(x / 255 - mean) / std``;
    ``mean``/``std`` are then single values. ``resolution`` must be None.

    ``order`` defaults to random when training and sequential otherwise; ``seed`` fixes a random
    order (epoch e uses seed + e). For data larger than RAM, FFCV advises ``order='quasi_random'``
    with ``os_cache=False``. ``indices`` restricts the loader to those examples
    (see ``class_subset_indices``).
    """
    import_ffcv()
    from ffcv.loader import Loader
    from ffcv.transforms import ToDevice

    threads = torch.get_num_threads()
    device = torch.device(device)
    mean, std = np.atleast_1d(mean).astype(float).tolist(), np.atleast_1d(std).astype(float).tolist()
    channels = 1 if grey else 3
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} value(s) for {'grey' if grey else 'RGB'} images")
    to_device = [ToDevice(device, non_blocking=True)] if device.type != "cpu" else []  # one op for both pipelines
    if grey:
        image_pipeline, decoder = grey_pipeline(mean, std, resolution, to_device,
                                                torch.float16 if fp16 else torch.float32)
    else:
        # The target's decoder (targets.<t>.train_decoder / eval_decoder). Until 2026-12 it was ignored here (every
        # RGB train loader cropped at random, every eval loader centre-cropped): see the note in docs/paper-scale.md.
        kind = decoder or ("random_resized_crop" if train else "center_crop")
        image_pipeline, decoder = rgb_pipeline(kind, resolution, train if flip is None else flip, mean, std, device,
                                               to_device, channels_last, fp16)
    loader = Loader(str(path), batch_size=batch_size, num_workers=num_workers or default_workers(),
                    order=_order_option(order or ("random" if train else "sequential")), seed=seed,
                    indices=_checked(indices), drop_last=drop_last, os_cache=os_cache, batches_ahead=batches_ahead,
                    pipelines={"image": image_pipeline, "label": label_pipeline(to_device)})
    torch.set_num_threads(threads)  # Loader() set it to num_workers
    return FFCVLoader(loader, decoder, threads)


def _order_option(order: Order):
    from ffcv.loader import OrderOption

    return {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM,
            "sequential": OrderOption.SEQUENTIAL}[order]


def _checked(indices: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """``indices`` as int64, refusing an empty selection; None (every example) stays None."""
    if indices is None:
        return None
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("indices is empty")
    return indices


# ---------------------------------------------------------------------------------------------------------
# A prepared dataset folder, read like datatransfer.data.Dataset


class BetonDataset:
    """A dataset folder ``<root>/<name>/`` written by ``python -m launch.prepare``: ``train.beton``,
    ``<eval_split>.beton`` (``val`` for the source, ``test`` for targets) and ``meta.json`` (class names, grey).

    Offers ``data.Dataset``'s reading methods (``labels``, ``train_loader``, ``eval_loader``). Each kind of loader
    (split, train or eval, batch size, decoder) is built once and re-aimed at each call's examples and seed
    (``FFCVLoader.retarget``), so a loader returned earlier changes when the same kind is asked for again.
    """

    def __init__(self, root: Union[str, Path], name: str, eval_split: str, mean: Sequence[float],
                 std: Sequence[float], *, device: Union[str, torch.device] = "cpu", workers: int = 1,
                 os_cache: bool = True, fp16: bool = False):
        try:
            import_ffcv()
        except ImportError as e:
            raise DataError(f"source.loader=ffcv needs ffcv, which does not import here ({e}); "
                            f"scripts/install_ffcv.sh VENV installs it (docs/paper-scale.md)") from e
        folder = Path(root) / name
        self.paths = {"train": folder / "train.beton", "test": folder / f"{eval_split}.beton"}
        meta_path = folder / "meta.json"
        for path in (meta_path, *self.paths.values()):
            if not path.is_file():
                raise DataError(f"prepared dataset {name!r} not found: no {path} (write it with "
                                f"`python -m launch.prepare dataset=... out={root}`, docs/paper-scale.md)")
        meta = json.loads(meta_path.read_text())
        self.name = name
        self.class_names: List[str] = [str(c) for c in meta["classes"]]
        self.grey = bool(meta.get("grey", False))
        self.mean, self.std = list(mean), list(std)
        self.device = torch.device(device)
        self.workers, self.os_cache = int(workers), bool(os_cache)
        self.fp16 = bool(fp16) and self.device.type == "cuda"  # fp16 inputs go with autocast, on GPU only
        self._labels: dict = {}
        self._loaders: dict = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return 1 if self.grey else 3

    def labels(self, split: str) -> np.ndarray:
        """int64 labels of ``split`` ("train" or "test"), in file order (from the beton's metadata)."""
        if split not in self._labels:
            self._labels[split] = read_labels(self.paths[split])
        return self._labels[split]

    def _indices(self, split: str, keep: Optional[np.ndarray]) -> np.ndarray:
        labels = self.labels(split)
        if keep is None:
            return np.arange(len(labels), dtype=np.int64)
        return class_subset_indices(labels, np.flatnonzero(np.asarray(keep, dtype=bool)))

    def _loader(self, split: str, train: bool, batch_size: int, decoder: str, resolution: int) -> FFCVLoader:
        key = (split, train, batch_size, None if self.grey else decoder)
        if key not in self._loaders:
            self._loaders[key] = make_loader(
                self.paths[split], batch_size=batch_size, train=train, drop_last=train,
                resolution=None if self.grey else resolution, indices=self._indices(split, None),
                mean=self.mean, std=self.std, grey=self.grey, num_workers=self.workers,
                order=("random" if self.os_cache else "quasi_random") if train else "sequential",
                device=self.device, fp16=self.fp16, os_cache=self.os_cache, decoder=decoder)
        loader = self._loaders[key]
        if not self.grey:
            loader.set_resolution(resolution)
        return loader

    def train_loader(self, *, batch_size: int, generator=None, seed: int = 0, keep: Optional[np.ndarray] = None,
                     decoder: str = "random_resized_crop", resolution: int = 224,
                     examples: Optional[np.ndarray] = None) -> FFCVLoader:
        """Shuffled batches of the train split (of the classes in ``keep``, or exactly the images at ``examples``:
        ascending train indices), last partial batch dropped; the order of epoch e is seeded by ``seed + e``
        (``generator`` is for in-memory datasets)."""
        loader = self._loader("train", True, batch_size, decoder, resolution)
        idx = self._indices("train", keep) if examples is None else np.asarray(examples, dtype=np.int64)
        loader.retarget(idx, seed)
        return loader

    def eval_loader(self, split: str, *, batch_size: int = 1024, keep: Optional[np.ndarray] = None,
                    decoder: str = "center_crop", resolution: int = 224) -> FFCVLoader:
        """``split`` in file order (of the classes in ``keep``), every example, no augmentation."""
        loader = self._loader(split, False, batch_size, decoder, resolution)
        loader.retarget(self._indices(split, keep), 0)
        return loader
