# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Where the randomness of training (and of evaluation's samples) comes from: every draw is a pure function of its
coordinates, mixed into a seed by `derive_seed`, the package's one seed mixer.

Every random draw of training is a pure function of (seed, optimizer step, process index, micro-batch):

* the data order is an endless stream of per-epoch permutations, each seeded by (seed, epoch), and each optimizer
  step consumes the next `global_batch_size` positions of it;
* the flips, the noise, the timesteps and dropout of one micro-batch come from generators seeded by
  (seed, purpose, step, process, micro-batch).

So a run resumed from a checkpoint needs only the step counter and the data position to continue with exactly the
draws the uninterrupted run would have made, whatever happened to the global RNGs in between (and, with importance-
sampled timesteps, the sampler's loss history, which is a `state_dict` of device tensors).

Evaluation seeds image i of a run seeded `seed` with `derive_seed(seed, i, bits=64)` (`evaluation.sampling`).
"""

from dataclasses import dataclass

import numpy as np
import torch

# Purposes, so that the streams of one micro-batch are independent of each other.
EPOCH, FLIP, NOISE, DROPOUT, CONDITIONING_DROPOUT = 0, 1, 2, 3, 4


def derive_seed(*keys: int, bits: int = 63) -> int:
    """A `bits`-bit seed (1..64) that is a well-mixed function of the integer `keys`: the top bits of the first 64-bit
    word of numpy's SeedSequence of them. Training's draws take 63 bits, evaluation's image seeds all 64: a width is
    part of what a seed is, so changing one would change the images drawn (and the Fréchet distances measured)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"derive_seed: bits must be between 1 and 64, got {bits}")
    word = int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1, dtype=np.uint64)[0])
    return word >> (64 - bits)


@dataclass(frozen=True)
class StepRandomness:
    """The generators of one optimizer step on one process (see the module docstring)."""

    seed: int
    step: int
    process_index: int = 0

    def noise_generator(self, micro: int, device) -> torch.Generator:
        device = torch.device(device)
        return torch.Generator(device).manual_seed(derive_seed(self.seed, NOISE, self.step, self.process_index, micro))

    def conditioning_dropout_generator(self, micro: int, device) -> torch.Generator:
        """Which conditions (captions, class labels) classifier-free-guidance training replaces by the null one."""
        device = torch.device(device)
        seed = derive_seed(self.seed, CONDITIONING_DROPOUT, self.step, self.process_index, micro)
        return torch.Generator(device).manual_seed(seed)

    def seed_dropout(self, micro: int, device) -> None:
        """Reseed the global generator that dropout on `device` draws from (validation or a library may use it too).

        Only that generator: `torch.manual_seed` seeds every backend and costs ~0.15 ms, a few % of a small step.
        """
        seed = derive_seed(self.seed, DROPOUT, self.step, self.process_index, micro)
        device = torch.device(device)
        if device.type == "cpu":
            torch.default_generator.manual_seed(seed)
        elif device.type == "cuda":
            index = torch.cuda.current_device() if device.index is None else device.index
            torch.cuda.default_generators[index].manual_seed(seed)
        else:
            torch.manual_seed(seed)
