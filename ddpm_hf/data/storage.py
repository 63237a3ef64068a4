# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Where the decoded training images live. All storages give the same uint8 images in the same order, so a run may
switch between them, even on resume.

- "memory": one uint8 tensor in each process. Fastest for small data (the embedded digits, CIFAR-10); every process
  decodes and holds its own copy.
- "memmap": decoded once per machine into a raw uint8 file in the cache folder, keyed by a fingerprint of the source
  and the decoding; every process (and DataLoader worker) of the machine maps that one file, so the pages are the
  machine's page cache, shared, and a second run reuses them. Each use checks the entry's sizes and checksums; a
  damaged or partial entry is rebuilt, with a warning naming it (cache_entry.py).
- "lazy": nothing decoded in advance: each image is decoded when training reads it, inside the DataLoader workers.
  A first pass reads only the headers: it fixes the set of valid images (so a bad file never shifts the order) and
  the number of channels. A file that fails to decode later is left out of its micro-batch and counted.
- "auto": memory when the decoded set is small (`AUTO_MEMORY_BYTES` across a machine's processes), else memmap when
  the cache folder's disk has room for it, else lazy.
"""

import dataclasses
import errno
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..caching import cache_root, fingerprint
from ..choices import STORAGES
from ..io import TEMPORARY_MARK, format_bytes, fsync_path
from .cache_entry import discard_entry, entry_defect, publish_entry, read_index, write_index
from .dataset import DataError, ImageDataset, ImageListing
from .decoding import Decoder, allowed_bad_images, check_bad_fraction, image_channels

logger = logging.getLogger(__name__)

# Bumped whenever decoding changes what pixels an image gives (resampling, colour conversion): old cache entries
# then no longer match any fingerprint.
DECODER_VERSION = 1

# Below this many decoded bytes per machine (the data times the processes holding a copy), "auto" keeps the images in
# process memory: indexing a tensor is the cheapest read, and copies this small cost nothing. Measured with
# benchmarks/bench_data.py: at the presets' resolutions the UNet, not the read, bounds the step for every storage.
AUTO_MEMORY_BYTES = 2 << 30


def store_images(listing: ImageListing, decoder: Decoder, storage: str = "memory",
                 cache_dir: str | None = None) -> ImageDataset:
    """Decode (or, lazily, only check) the listed images into `storage`; see the module docstring."""
    if storage not in STORAGES:
        raise DataError(f"unknown data storage {storage!r}: choose one of {', '.join(STORAGES)}")
    cache = cache_root(cache_dir) / "decoded"
    if storage == "auto":
        storage = choose_storage(listing, decoder, cache)
    if storage == "memory":
        positions = range(len(listing.images))
        pixels, kept, skipped = decoder.decode_all(_named_sources(listing.images, positions), len(positions),
                                                   listing.source)
        return _dataset(listing, pixels, kept, skipped, "memory")
    entry = cache / entry_name(listing, decoder, storage)
    _check_cache_folder(cache)
    # The local main process checks the pixels' checksum too; a machine's other processes open the entry after it.
    defect = entry_defect(entry, verify_pixels=os.environ.get("LOCAL_RANK", "0") == "0")
    built = defect is not None
    if built and entry.exists():
        logger.warning(f"The decoded cache entry {entry} is damaged ({defect}): rebuilding it")
        discard_entry(entry, defect)
    if built:
        _build_entry(entry, listing, decoder, storage)
    index = read_index(entry)
    kept = np.load(entry / "kept.npy").tolist()
    shape = (len(kept), index["channels"], decoder.resolution, decoder.resolution)
    if storage == "memmap":
        pixels = MappedPixels(str(entry / "pixels.u8"), shape)
    else:
        lazy_decoder = Decoder(decoder.resolution, decoder.center_crop, index["channels"], 0.0, False)
        pixels = LazyPixels(listing.images, kept, lazy_decoder)
    return dataclasses.replace(_dataset(listing, pixels, kept, index["skipped"], storage), cache_entry=str(entry),
                               built_cache_entry=built)


def choose_storage(listing: ImageListing, decoder: Decoder, cache: Path) -> str:
    decoded = decoded_bytes(len(listing.images), decoder.channels or 3, decoder.resolution)
    if decoded * int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= AUTO_MEMORY_BYTES:
        return "memory"
    existing = next((path for path in [cache, *cache.parents] if path.exists()), Path("/"))
    return "memmap" if shutil.disk_usage(existing).free > 1.1 * decoded else "lazy"


def decoded_bytes(count: int, channels: int, resolution: int) -> int:
    return count * channels * resolution * resolution


def entry_name(listing: ImageListing, decoder: Decoder, storage: str) -> str:
    """A cache entry's folder: a readable prefix, then the fingerprint of what its pixels depend on: the images, the
    decoding, and the storage (lazy entries hold no pixels)."""
    digest = fingerprint({"images": listing.identity, "resolution": decoder.resolution,
                          "center_crop": decoder.center_crop, "channels": decoder.channels,
                          "decoder": DECODER_VERSION, "storage": storage})
    readable = "".join(c if c.isalnum() else "-" for c in Path(listing.source).name or "data")[:40]
    return f"{readable}-{decoder.resolution}px-{storage}-{digest}"


def _build_entry(entry: Path, listing: ImageListing, decoder: Decoder, storage: str) -> None:
    """Decode (memmap) or check the headers of (lazy) every image into a new cache entry: written in a hidden
    folder beside it, with the size and checksum of each file, and renamed into place whole (cache_entry.py), so a
    crash or a full disk never leaves a half entry behind."""
    temporary = entry.parent / f".{entry.name}{TEMPORARY_MARK}{os.getpid()}"
    _remove_abandoned_entries(entry.parent)
    try:
        temporary.mkdir(parents=True)
        if decoder.channels is None or storage == "lazy":
            channels, valid, skipped = _check_headers(listing, decoder)
        else:
            channels, valid, skipped = decoder.channels, list(range(len(listing.images))), []
        if storage == "memmap":
            valid, more_skipped = _decode_into_file(temporary / "pixels.u8", listing, valid, channels, decoder)
            skipped += more_skipped
        np.save(temporary / "kept.npy", np.asarray(valid, dtype=np.int64))
        write_index(temporary, {"source": listing.source, "storage": storage, "count": len(valid),
                                "channels": channels, "skipped": skipped})
        for name in os.listdir(temporary):
            fsync_path(str(temporary / name))
        publish_entry(temporary, entry)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DataError(f"no space left in {entry.parent} for the decoded images: free some, choose another"
                            " folder with --data_cache_dir, or pass --data_storage lazy (decodes while training,"
                            " stores nothing)") from None
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise DataError(f"cannot write the decoded images into {entry.parent} ({err.strerror}): pass a writable"
                            " --data_cache_dir, or --data_storage memory (decodes into process memory, stores"
                            " nothing)") from None
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _check_cache_folder(cache: Path) -> None:
    """A cache folder (or one above it) that is a file is a one-line error, not a traceback from mkdir."""
    for path in [cache, *cache.parents]:
        if path.exists():
            if not path.is_dir():
                raise DataError(f"the data cache folder {cache.parent} cannot be created: {path} is a file; pass a"
                                " folder with --data_cache_dir (it is created if missing)")
            return


def _decode_into_file(path: Path, listing: ImageListing, positions: list[int], channels: int,
                      decoder: Decoder) -> tuple[list[int], list[str]]:
    """Decode the images at `positions` into a raw uint8 (N, C, H, W) file, one image at a time (memory stays flat):
    the positions kept and the names skipped."""
    images = listing.images
    full = Decoder(decoder.resolution, decoder.center_crop, channels, decoder.max_bad_fraction, decoder.show_progress)
    logger.info(f"Decoding {len(positions)} images into {path.parent.name.lstrip('.')} (about"
                f" {format_bytes(decoded_bytes(len(positions), channels, decoder.resolution))})")
    with open(path, "wb") as file:
        _, kept, skipped = full.decode_all(_named_sources(images, positions), len(positions), listing.source,
                                           write=lambda image: file.write(image.tobytes()))
    return [positions[i] for i in kept], skipped


def _remove_abandoned_entries(cache: Path) -> None:
    """Delete the half-built entries of processes that no longer run (killed while decoding)."""
    for path in cache.glob(f".*{TEMPORARY_MARK}*") if cache.is_dir() else ():
        pid = path.name.rsplit(TEMPORARY_MARK, 1)[1]
        if pid.isdigit() and not _is_running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _check_headers(listing: ImageListing, decoder: Decoder) -> tuple[int, list[int], list[str]]:
    """Open every image's header (no decoding): the channels `decoder.channels=None` gives, the positions of the
    images that open, and the names of those that do not (too many abort, as in decoding)."""
    images, valid, bad, grayscale = listing.images, [], [], True
    for position in tqdm(range(len(images)), desc=f"Checking {listing.source}", unit="img",
                         disable=not decoder.show_progress):
        try:
            channels = image_channels(images.source(position))
        except Exception as err:  # noqa: BLE001  (any failure means "bad file", as in decoding)
            bad.append((images.name(position), f"{type(err).__name__}: {err}"))
            continue
        valid.append(position)
        grayscale = grayscale and channels == 1
    check_bad_fraction(bad, len(images), decoder.max_bad_fraction)
    if not valid:
        raise DataError(f"no image in {listing.source} could be opened")
    return decoder.channels or (1 if grayscale else 3), valid, [name for name, _ in bad]


def _named_sources(images, positions: Sequence[int]):
    """(name, source) of the images at `positions`, one at a time: what `Decoder.decode_all` reads."""
    return ((images.name(position), images.source(position)) for position in positions)


def _dataset(listing: ImageListing, pixels, kept: Sequence[int], skipped: list[str], storage: str) -> ImageDataset:
    def keep(values):
        return None if values is None else [values[position] for position in kept]

    labels = keep(listing.labels)
    return ImageDataset(pixels=pixels, captions=keep(listing.captions),
                        labels=None if labels is None else torch.tensor(labels, dtype=torch.int64),
                        skipped=skipped, source=listing.source, class_names=listing.class_names, storage=storage)


class MappedPixels:
    """uint8 (N, C, H, W) images in a raw file, mapped read-only into each process that reads them. Pickling (to a
    DataLoader worker, under any start method) sends the path, not the pixels; the map is reopened there."""

    dtype, ndim = torch.uint8, 4

    def __init__(self, path: str, shape: tuple[int, int, int, int]):
        self.path, self.shape = path, torch.Size(shape)
        self._array = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices) -> torch.Tensor:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=tuple(self.shape))
        return torch.from_numpy(self._array[np.asarray(indices)])  # numpy copies just these rows out of the map

    def read(self, indices: torch.Tensor):
        return self[indices], indices, ()

    def __getstate__(self):
        return {"path": self.path, "shape": self.shape, "_array": None}


class LazyPixels:
    """Images decoded when read, in whichever process reads them (the DataLoader workers), and not kept."""

    dtype, ndim = torch.uint8, 4

    def __init__(self, images, positions: Sequence[int], decoder: Decoder):
        self.images, self.decoder = images, decoder
        self.positions = np.asarray(positions, dtype=np.int64)  # image i of the set is images[positions[i]]
        self.shape = torch.Size((len(self.positions), decoder.channels, decoder.resolution, decoder.resolution))
        self._reported = set()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices) -> torch.Tensor:
        return self.read(torch.as_tensor(indices).reshape(-1))[0]

    def read(self, indices: torch.Tensor):
        """(the images that decode, their indices, the names of those that do not)."""
        arrays, kept, skipped = [], [], []
        for index in indices.tolist():
            position = int(self.positions[index])
            try:
                arrays.append(self.decoder.decode_one(self.images.source(position)))
            except Exception as err:  # noqa: BLE001  (any failure means "bad file")
                name = self.images.name(position)
                if name not in self._reported:  # why, once per reading process; the trainer counts every one
                    self._reported.add(name)
                    logger.warning(f"Could not decode {name}: {type(err).__name__}: {err}")
                skipped.append(name)
                continue
            kept.append(index)
        batch = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return batch, torch.tensor(kept, dtype=torch.int64), tuple(skipped)


def read_images(pixels, indices: torch.Tensor):
    """(the images at `indices`, the indices of those returned, the names of those left out) from any storage."""
    if isinstance(pixels, torch.Tensor):
        return pixels[indices], indices, ()
    return pixels.read(indices)


class DecodeFailures:
    """The images that failed to decode during training (lazy storage): each is reported once, and past the
    tolerated number (`--max_bad_image_fraction` of the set, counting those the header check skipped) the run stops
    with their names, before writing any checkpoint after them."""

    def __init__(self, dataset: ImageDataset, max_bad_fraction: float):
        self.total, self.max_bad_fraction = len(dataset) + len(dataset.skipped), max_bad_fraction
        self.skipped_by_header_check, self.names = list(dataset.skipped), []

    def add(self, skipped: Sequence[str], batch_size: int) -> None:
        if not skipped:  # every micro-batch passes here: nothing to do for one that decoded whole
            return
        new = [name for name in skipped if name not in self.names]
        self.names.extend(new)
        if new:
            logger.warning(f"Left out of training: {', '.join(new)} (could not be decoded; {len(self.names)} so far)")
            bad = [(name, "could not be decoded") for name in self.skipped_by_header_check + self.names]
            if len(bad) > allowed_bad_images(self.total, self.max_bad_fraction):
                check_bad_fraction(bad, self.total, self.max_bad_fraction)  # raises, naming them
        if len(skipped) == batch_size:
            raise DataError(f"no image of a micro-batch could be decoded ({', '.join(skipped)}): check the files")
