"""FFCV datasets: write ``.beton`` files and build FFCV loaders over them.

The paper-scale runs read ImageNet and the target datasets through FFCV; the mini runs use in-memory
tensors (``datatransfer.data``). This module is the only place that knows about FFCV.

Every beton written here has the same two fields, so one loader builder serves all of them:

* ``image``: ``RGBImageField``. Grey images are replicated to 3 channels, because FFCV's image field and
  its crop decoders only handle RGB; this triples the storage of grey data (28x28: 2.3 KB an image),
  which is small, and lets RGB models read the same file. ``make_loader(..., grey=True)`` reads
  channel 0 back.
* ``label``: ``IntField``. Its values live in the beton's metadata table, so ``read_labels`` gets all
  labels without decoding an image (ImageNet's 1.28 M labels: one ~30 MB read).

FFCV pitfalls handled here:

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

import functools
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

from datatransfer.errors import DataError

if TYPE_CHECKING:  # ffcv is an optional dependency, imported lazily (see import_ffcv)
    from ffcv.loader import Loader

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # on the [0, 1] scale, like torchvision
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_RATIO = 224 / 256  # eval centre crop: crop side / short side, as in ffcv-imagenet

Order = Literal["random", "quasi_random", "sequential"]


def import_ffcv() -> None:
    """Import ffcv without letting it change torch's thread count (it sets 1 at import).

    Every function here calls this; call it first to pay the import (7+ s, numba compiling) up front.
    """
    threads = torch.get_num_threads()
    import ffcv.loader  # noqa: F401
    import ffcv.writer  # noqa: F401

    torch.set_num_threads(threads)


def _default_workers() -> int:
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


class _TorchNormalize(torch.nn.Module):
    """uint8 (B, C, H, W) -> float, (x / 255 - mean) / std, in the same float ops as ``datatransfer.data``.

    Used for grey data (exact match with the in-memory loader) and on CUDA, where FFCV's
    NormalizeImage would need cupy.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype, grey: bool):
        super().__init__()
        self.mean, self.std, self.dtype, self.grey = list(mean), list(std), dtype, grey
        self._stats: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey:  # (B, H, W, 3) replicated channels -> (B, 1, H, W)
            x = x[..., :1].permute(0, 3, 1, 2)
        x = x.to(torch.float32) / 255.0
        if len(self.mean) == 1:  # Python scalars, as the in-memory loader uses, for bitwise-equal output
            x = (x - self.mean[0]) / self.std[0]
        else:
            if x.device not in self._stats:  # copied to each device once, not every batch
                self._stats[x.device] = tuple(torch.tensor(v, device=x.device).view(1, -1, 1, 1)
                                              for v in (self.mean, self.std))
            mean, std = self._stats[x.device]
            x = (x - mean) / std
        return x.to(self.dtype)


@functools.lru_cache(maxsize=None)
def _flip_op_class():
    """A horizontal flip op equivalent to ffcv's RandomHorizontalFlip (each image, probability 1/2).

    ffcv's version assigns a reversed slice (``dst[i] = images[i, :, ::-1]``), which numba takes
    5-12 s to compile here, paid by every process; plain loops compile in well under a second.
    Built on first use because ffcv is imported lazily.
    """
    from dataclasses import replace

    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler
    from ffcv.pipeline.operation import Operation
    from numpy.random import rand

    class RandomHorizontalFlip(Operation):
        def generate_code(self):
            my_range = Compiler.get_iterator()

            def flip(images, dst):  # (B, H, W, C) uint8, before ToTensor
                n, h, w, c = images.shape
                should_flip = rand(n) < 0.5
                for i in my_range(n):
                    for r in range(h):
                        for col in range(w):
                            src = w - 1 - col if should_flip[i] else col
                            for k in range(c):
                                dst[i, r, col, k] = images[i, r, src, k]
                return dst

            flip.is_parallel = True
            return flip

        def declare_state_and_memory(self, previous_state):
            return replace(previous_state, jit_mode=True), AllocationQuery(previous_state.shape, previous_state.dtype)

    return RandomHorizontalFlip


class _TorchUpsample(torch.nn.Module):
    """Nearest-neighbour upsampling of a (B, C, h, w) batch to ``size`` x ``size`` (CIFAR's 32 px to 224, as in the
    release), channels-last."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="nearest")
        return x.contiguous(memory_format=torch.channels_last)


class FFCVLoader:
    """An FFCV ``Loader`` that yields ``(images, labels)`` and leaves torch's thread count alone.

    FFCV sets torch's threads to ``num_workers`` in the calling thread on every ``iter()``;
    this wrapper puts back the count the caller had when the loader was made.
    """

    def __init__(self, loader: "Loader", decoder, torch_threads: int):
        self.loader = loader  # the underlying ffcv.loader.Loader
        # What sets the resolution: a crop decoder (its output_size), a _TorchUpsample (its size), None for grey.
        self._decoder = decoder
        self._torch_threads = torch_threads

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        it = iter(self.loader)
        torch.set_num_threads(self._torch_threads)
        return it

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_examples(self) -> int:
        return len(self.loader.indices)

    @property
    def resolution(self) -> Optional[int]:
        if self._decoder is None:
            return None
        if isinstance(self._decoder, _TorchUpsample):
            return self._decoder.size
        return int(self._decoder.output_size[0])

    def set_resolution(self, resolution: int) -> None:
        """Change the output side for the next epoch (progressive resizing, as ffcv-imagenet does).

        Takes effect at the next ``iter()``: FFCV re-plans its buffers from the decoder every epoch.
        """
        if self._decoder is None:
            raise ValueError("a grey loader yields images at their stored size; it has no resolution")
        if isinstance(self._decoder, _TorchUpsample):
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
    """An FFCV loader over a beton written by this module; yields (images (B, C, H, W), labels int64 (B,)).

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
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import (
        CenterCropRGBImageDecoder,
        RandomResizedCropRGBImageDecoder,
        SimpleRGBImageDecoder,
    )
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import (
        NormalizeImage,
        Squeeze,
        ToDevice,
        ToTensor,
        ToTorchImage,
    )

    threads = torch.get_num_threads()
    device = torch.device(device)
    mean, std = np.atleast_1d(mean).astype(float).tolist(), np.atleast_1d(std).astype(float).tolist()
    channels = 1 if grey else 3
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} value(s) for {'grey' if grey else 'RGB'} images")
    to_device = [ToDevice(device, non_blocking=True)] if device.type != "cpu" else []
    out_dtype = torch.float16 if fp16 else torch.float32

    decoder = None
    if grey:
        if resolution is not None:
            raise ValueError("grey loaders yield images at their stored size: pass resolution=None")
        image_pipeline = [SimpleRGBImageDecoder(), ToTensor(), *to_device,
                          _TorchNormalize(mean, std, out_dtype, grey=True)]
    else:
        if resolution is None:
            raise ValueError("RGB loaders need a resolution")
        size = (int(resolution), int(resolution))
        kind = decoder or ("random_resized_crop" if train else "center_crop")
        resize = []
        if kind == "random_resized_crop":
            decoder = RandomResizedCropRGBImageDecoder(size)
        elif kind == "center_crop":
            decoder = CenterCropRGBImageDecoder(size, ratio=DEFAULT_CROP_RATIO)
        elif kind == "upsample":
            resize = [_TorchUpsample(size[0])]
        else:
            raise ValueError(f"unknown decoder {kind!r} (random_resized_crop | center_crop | upsample)")
        first = SimpleRGBImageDecoder() if resize else decoder
        augment = [_flip_op_class()()] if (train if flip is None else flip) else []
        if device.type == "cpu":
            # FFCV's numba NormalizeImage works on the (B, H, W, 3) uint8 array, before ToTensor.
            norm = NormalizeImage(np.array(mean) * 255, np.array(std) * 255, np.float16 if fp16 else np.float32)
            image_pipeline = [first, *augment, norm, ToTensor(), ToTorchImage(channels_last=channels_last), *resize]
        else:
            image_pipeline = [first, *augment, ToTensor(), *to_device, ToTorchImage(channels_last=channels_last),
                              _TorchNormalize(mean, std, out_dtype, grey=False), *resize]
        decoder = resize[0] if resize else decoder
    # Squeeze(1), not Squeeze(): a last batch of one would otherwise lose its batch dimension.
    label_pipeline = [IntDecoder(), ToTensor(), Squeeze(1), *to_device]

    if order is None:
        order = "random" if train else "sequential"
    order_option = {"random": OrderOption.RANDOM, "quasi_random": OrderOption.QUASI_RANDOM,
                    "sequential": OrderOption.SEQUENTIAL}[order]
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            raise ValueError("indices is empty")

    loader = Loader(str(path), batch_size=batch_size, num_workers=num_workers or _default_workers(),
                    order=order_option, seed=seed, indices=indices, drop_last=drop_last, os_cache=os_cache,
                    batches_ahead=batches_ahead, pipelines={"image": image_pipeline, "label": label_pipeline})
    torch.set_num_threads(threads)  # Loader() set it to num_workers
    return FFCVLoader(loader, decoder, threads)


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
                     decoder: str = "random_resized_crop", resolution: int = 224) -> FFCVLoader:
        """Shuffled batches of the train split (of the classes in ``keep``), last partial batch dropped; the
        order of epoch e is seeded by ``seed + e`` (``generator`` is for in-memory datasets)."""
        loader = self._loader("train", True, batch_size, decoder, resolution)
        loader.retarget(self._indices("train", keep), seed)
        return loader

    def eval_loader(self, split: str, *, batch_size: int = 1024, keep: Optional[np.ndarray] = None,
                    decoder: str = "center_crop", resolution: int = 224) -> FFCVLoader:
        """``split`` in file order (of the classes in ``keep``), every example, no augmentation."""
        loader = self._loader(split, False, batch_size, decoder, resolution)
        loader.retarget(self._indices(split, keep), 0)
        return loader
