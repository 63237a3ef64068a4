# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The hooks tests and debugging use, each off unless its environment variable is set; the trainer calls them at
three points (after the UNet of a checkpoint is written, at each step, at the end of the loop) and reads these
variables nowhere else.

    DDPM_HF_TEST_PAUSE_IN_SAVE=<step>   the save of checkpoint <step> stops half-written: it leaves a `PAUSED` file
                                        in the temporary folder and sleeps, so that a test can kill the run mid-save
    DDPM_HF_TEST_STEP_DELAY=<seconds>   sleep after every step, so that a test can kill or signal the run at a
                                        chosen moment
    DDPM_HF_DEBUG_RANKS=1               each process writes <output_dir>/debug/rank-<i>.json: a hash of every
                                        micro-batch it trained on, of its final parameters and of its timestep
                                        sampler's state, and which data storage it read (to check sharding and
                                        synchronisation across processes)
"""

import hashlib
import json
import os
import time

from ..io import write_text_atomically

PAUSE_IN_SAVE = "DDPM_HF_TEST_PAUSE_IN_SAVE"
STEP_DELAY = "DDPM_HF_TEST_STEP_DELAY"
DEBUG_RANKS = "DDPM_HF_DEBUG_RANKS"


def pause_in_save(step: int, folder: str) -> None:
    """With DDPM_HF_TEST_PAUSE_IN_SAVE=<step>: leave `PAUSED` in the half-written checkpoint `folder`, then sleep
    (the test kills the run; an hour is far beyond any test's patience)."""
    if os.environ.get(PAUSE_IN_SAVE) == str(step):
        open(os.path.join(folder, "PAUSED"), "w").close()
        time.sleep(3600)


class DebugHooks:
    """The loop's hooks: the step delay and, with DDPM_HF_DEBUG_RANKS=1, the per-process record."""

    def __init__(self, output_dir: str, process_index: int):
        self.enabled = os.environ.get(DEBUG_RANKS) == "1"
        self.delay = float(os.environ.get(STEP_DELAY, "0"))
        self.path = os.path.join(output_dir, "debug", f"rank-{process_index}.json")
        self.batches, self.data = [], {}

    def data_storage(self, data) -> None:
        """Which storage this process read, and whether it decoded the cache entry or found it built."""
        self.data = {key: getattr(data, key, None) for key in ("storage", "cache_entry", "built_cache_entry")}

    def micro_batches(self, step: int, batches) -> None:
        if self.enabled:
            self.batches.extend([step, hashlib.sha1(pixels.numpy().tobytes()).hexdigest()] for pixels in batches)

    def after_step(self) -> None:
        if self.delay:
            time.sleep(self.delay)

    @staticmethod
    def digest(state: dict) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(state.items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def finish(self, model, timestep_sampler) -> None:
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_text_atomically(self.path, json.dumps({
            "micro_batches": self.batches, "parameters": self.digest(model.state_dict()), "data": self.data,
            "timestep_sampler": self.digest(timestep_sampler.state_dict()),
        }))
