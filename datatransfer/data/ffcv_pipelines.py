"""The FFCV pipelines of ``ffcv_reader.make_loader``: image pipelines per decoder (grey, random resized crop, centre
crop, upsample), the label pipeline, and our own ops (normalisation in torch, a fast flip, upsampling).

Called once ffcv is imported (``ffcv_reader.import_ffcv``); ffcv's own modules are imported inside the functions.
"""

from __future__ import annotations

import functools
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

DEFAULT_CROP_RATIO = 224 / 256  # eval centre crop: crop side / short side, as in ffcv-imagenet


class TorchNormalize(torch.nn.Module):
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
def flip_op_class():
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


class TorchUpsample(torch.nn.Module):
    """Nearest-neighbour upsampling of a (B, C, h, w) batch to ``size`` x ``size`` (CIFAR's 32 px to 224, as in the
    release), channels-last."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="nearest")
        return x.contiguous(memory_format=torch.channels_last)


def grey_pipeline(mean: List[float], std: List[float], resolution: Optional[int], to_device: list,
                  dtype: torch.dtype) -> Tuple[list, None]:
    """Grey images at their stored size, channel 0 of the replicated three, normalised in torch."""
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.transforms import ToTensor

    if resolution is not None:
        raise ValueError("grey loaders yield images at their stored size: pass resolution=None")
    return [SimpleRGBImageDecoder(), ToTensor(), *to_device, TorchNormalize(mean, std, dtype, grey=True)], None


def rgb_pipeline(kind: str, resolution: Optional[int], flip: bool, mean: List[float], std: List[float],
                 device: torch.device, to_device: list, channels_last: bool, fp16: bool) -> Tuple[list, Any]:
    """RGB images through decoder ``kind`` at ``resolution``, flipped when ``flip``, normalised; returns the pipeline
    and what sets its resolution (the crop decoder, or the TorchUpsample)."""
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.transforms import NormalizeImage, ToTensor, ToTorchImage

    if resolution is None:
        raise ValueError("RGB loaders need a resolution")
    decoder = _rgb_decoder(kind, int(resolution))
    resize = [decoder] if isinstance(decoder, TorchUpsample) else []
    first = SimpleRGBImageDecoder() if resize else decoder
    augment = [flip_op_class()()] if flip else []
    if device.type == "cpu":
        # FFCV's numba NormalizeImage works on the (B, H, W, 3) uint8 array, before ToTensor.
        norm = NormalizeImage(np.array(mean) * 255, np.array(std) * 255, np.float16 if fp16 else np.float32)
        pipeline = [first, *augment, norm, ToTensor(), ToTorchImage(channels_last=channels_last), *resize]
    else:
        pipeline = [first, *augment, ToTensor(), *to_device, ToTorchImage(channels_last=channels_last),
                    TorchNormalize(mean, std, torch.float16 if fp16 else torch.float32, grey=False), *resize]
    return pipeline, decoder


def _rgb_decoder(kind: str, side: int):
    """The crop decoder of ``kind`` at ``side`` x ``side``, or for upsample the TorchUpsample to that side."""
    from ffcv.fields.rgb_image import (
        CenterCropRGBImageDecoder,
        RandomResizedCropRGBImageDecoder,
    )

    if kind == "random_resized_crop":
        return RandomResizedCropRGBImageDecoder((side, side))
    if kind == "center_crop":
        return CenterCropRGBImageDecoder((side, side), ratio=DEFAULT_CROP_RATIO)
    if kind == "upsample":
        return TorchUpsample(side)
    raise ValueError(f"unknown decoder {kind!r} (random_resized_crop | center_crop | upsample)")


def label_pipeline(to_device: list) -> list:
    """int64 labels (B,). Squeeze(1), not Squeeze(): a last batch of one would otherwise lose its batch dimension."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.transforms import Squeeze, ToTensor

    return [IntDecoder(), ToTensor(), Squeeze(1), *to_device]
