# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The training data of a run: loading it into its storage once per machine, and the feed of micro-batches the loop
reads from it: the seeded `DataStream` over stored images (memory, memmap, lazy), or a `datasets` stream
(--streaming), whose per-process state the checkpoints carry."""

from collections.abc import Iterator

from accelerate.logging import get_logger
from accelerate.utils import gather_object

from ..data.dataset import DataError, ImageDataset
from ..data.order import MicroBatch, flip_micro_batch, micro_batch_loader
from ..data.sources import load_image_dataset
from ..data.storage import DecodeFailures, decoded_bytes
from ..io import format_bytes

logger = get_logger(__name__)


def load_training_data(args, accelerator):
    """The images of the run: an `ImageDataset`, or with --streaming a `streaming.StreamingImages`.

    The local main process of each machine goes first: it downloads a Hub data set into the machine's cache and
    decodes (memmap) or checks (lazy) the images into --data_cache_dir; the others then find it all there, and map
    the same file.
    """
    with accelerator.local_main_process_first():
        if args.streaming:
            from ..data.streaming import open_streaming_dataset  # imported here: needs torchdata

            data = open_streaming_dataset(
                dataset_name=args.dataset_name, dataset_config_name=args.dataset_config_name,
                image_column=args.image_column, class_column=args.class_column, resolution=args.resolution,
                center_crop=args.center_crop, channels=args.channels, seed=args.seed,
                shuffle_buffer_size=args.shuffle_buffer_size, process_index=accelerator.process_index,
                num_processes=accelerator.num_processes, max_bad_fraction=args.max_bad_image_fraction,
            )
            logger.info(f"Data: streaming {data.source} ({data.channels}x{args.resolution}x{args.resolution}),"
                        f" shuffle buffer {args.shuffle_buffer_size}, one shard per process")
            return data
        data = load_image_dataset(
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_data_dir=args.train_data_dir,
            embedded=args.embedded_dataset,
            image_column=args.image_column,
            caption_column=args.caption_column if args.text_to_image else None,
            class_column=args.class_column,
            resolution=args.resolution,
            center_crop=args.center_crop,
            channels=args.channels,
            max_train_samples=args.max_train_samples,
            seed=args.seed,
            max_bad_fraction=args.max_bad_image_fraction,
            show_progress=accelerator.is_local_main_process,
            storage=args.data_storage,
            cache_dir=args.data_cache_dir,
        )
    size = format_bytes(decoded_bytes(len(data), data.channels, args.resolution))
    where = {"memory": "in process memory", "memmap": "memory-mapped, shared by the machine's processes",
             "lazy": "decoded while training"}[data.storage]
    if data.cache_entry is not None:
        where += f"; cache {data.cache_entry}, {'built now' if data.built_cache_entry else 'found built'}"
    logger.info(f"Data: {len(data)} images from {data.source}, {size} decoded, storage {data.storage} ({where})")
    if data.storage == "lazy" and not args.dataloader_num_workers:
        logger.warning("Lazy storage without dataloader workers decodes each batch in the training process, between"
                       " steps: pass --dataloader_num_workers 2 (or more) to decode alongside them")
    return data


class MicroBatchFeed:
    """This process's micro-batches, step after step, from whichever storage the data lives in."""

    def __init__(self, training, data, first_step: int):
        args, layout = training.args, training.layout
        self.args, self.layout, self.training, self.data = args, layout, training, data
        self.streaming = not isinstance(data, ImageDataset)
        self.failures = None if self.streaming else DecodeFailures(data, args.max_bad_image_fraction)
        pin_memory = training.accelerator.device.type == "cuda"
        if self.streaming:
            self.loader = self._stream_loader(data, pin_memory)
            self.batches = self._flipped(iter(self.loader), first_step)
        else:
            conditions = (training.text.bank.caption_indices.cpu() if training.text is not None
                          else training.classes.labels if training.classes is not None else None)
            self.loader = micro_batch_loader(
                data.pixels, seed=args.seed, layout=layout, first_step=first_step, last_step=args.max_train_steps,
                first_position=training.state.samples_seen, flip=args.random_flip,
                num_workers=args.dataloader_num_workers, pin_memory=pin_memory, conditions=conditions,
            )
            self.batches = iter(self.loader)

    def next_step(self) -> list[MicroBatch]:
        """The micro-batches of the next optimizer step; images that failed to decode are counted (too many stop
        the run, with their names)."""
        items = [next(self.batches) for _ in range(self.layout.gradient_accumulation_steps)]
        for item in items:
            if self.failures is not None:
                self.failures.add(item.skipped, self.layout.batch_size)
            elif item.skipped:  # a stream has no size to take a fraction of: each is reported
                logger.warning(f"Left out of training: {', '.join(item.skipped)} (could not be decoded)")
        return items

    def _stream_loader(self, data, pin_memory: bool):
        from ..data.streaming import streaming_loader

        saved, args = self.training.state.stream_state, self.args
        accelerator = self.training.accelerator
        state = None
        if saved is None and self.training.state.global_step:
            raise DataError("the checkpoint was not trained with --streaming: resume it without --streaming, or start"
                            " a new run into another --output_dir")
        if saved is not None:
            if len(saved) != accelerator.num_processes:
                raise DataError(f"the checkpoint's stream was read by {len(saved)} process(es), this run has"
                                f" {accelerator.num_processes}: resume with --num_processes {len(saved)}, or start a"
                                " new run into another --output_dir")
            state = saved[accelerator.process_index]  # streaming_loader checks its layout against this run's
        return streaming_loader(data, batch_size=args.train_batch_size, num_workers=args.dataloader_num_workers,
                                pin_memory=pin_memory, state=state)

    def _flipped(self, batches: Iterator[MicroBatch], first_step: int) -> Iterator[MicroBatch]:
        """A stream's micro-batches, flipped with the seeds stored images get (the stream's loader does not know
        the step)."""
        step, process = first_step, self.layout.process_index
        while True:
            for micro in range(self.layout.gradient_accumulation_steps):
                item = next(batches)
                if self.args.random_flip:
                    item = item._replace(pixels=flip_micro_batch(item.pixels, self.args.seed, step, process, micro))
                yield item
            step += 1

    def stream_state(self) -> list[dict] | None:
        """With --streaming, every process's loader state, gathered (a collective: every process calls it at the
        same step); None otherwise."""
        if not self.streaming:
            return None
        from ..data.streaming import loader_state

        accelerator = self.training.accelerator
        state = loader_state(self.loader, num_processes=accelerator.num_processes,
                             num_workers=self.args.dataloader_num_workers, batch_size=self.args.train_batch_size)
        return gather_object([state])

