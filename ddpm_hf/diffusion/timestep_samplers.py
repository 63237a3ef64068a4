# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Which timesteps a training batch sees: uniform (Ho et al. 2020, Algorithm 1), or importance-sampled by the loss
history (Nichol & Dhariwal 2021, eq. 18). One registry, `TIMESTEP_SAMPLERS`, and its factory."""


import torch

from ..choices import TIMESTEP_SAMPLER_NAMES


class UniformSampler:
    """t ~ U{0..T-1} with every importance weight 1: Ho et al.'s sampling, and the default.

    It draws exactly `torch.randint(0, T, (B,), generator=generator, device=device)`. Its weights are `None` (all 1):
    the loss stays a plain mean.
    """

    def __init__(self, num_timesteps: int, device=None):  # `device`: the factory's signature; nothing is kept on it
        self.num_timesteps = num_timesteps

    def sample(self, batch_size: int, generator: torch.Generator | None, device) -> tuple[torch.Tensor, None]:
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=device)
        return t, None

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Nothing to learn."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class LossSecondMomentSampler:
    """Importance sampling of t (Improved DDPM, eq. 18): p_t proportional to sqrt(E[L_t^2]), weights 1 / (T p_t).

    improved-diffusion's `LossSecondMomentResampler`: E[L_t^2] is the mean of the last `history_per_term` losses seen
    at t; until every t has that many, t is uniform (and every weight 1); then p is mixed with `uniform_prob` of the
    uniform distribution, so that no t starves. Since E_{t~p}[L_t / (T p_t)] = (1/T) sum_t L_t, the weighted loss
    has the expectation of the uniform one, with less variance when the L_t differ by orders of magnitude (L_vlb's).

    The state lives on the device as tensors (`loss_history` (T, H) float64, a ring buffer per t, and `loss_counts`
    (T,) int64, every loss ever seen at t), and neither sampling nor `update` reads anything back to the host.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001, device=None):
        self.num_timesteps, self.history_per_term, self.uniform_prob = num_timesteps, history_per_term, uniform_prob
        self.loss_history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64, device=device)
        self.loss_counts = torch.zeros(num_timesteps, dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device:
        return self.loss_history.device

    def to(self, device) -> "LossSecondMomentSampler":
        self.loss_history, self.loss_counts = self.loss_history.to(device), self.loss_counts.to(device)
        return self

    def probabilities(self) -> torch.Tensor:
        """p_t, (T,) float64 on the sampler's device: uniform until warm, then sqrt(E[L_t^2]) normalised and mixed."""
        T = self.num_timesteps
        uniform = torch.full((T,), 1.0 / T, dtype=torch.float64, device=self.device)
        root_second_moment = self.loss_history.square().mean(dim=1).sqrt()
        total = root_second_moment.sum()
        # All-zero losses would give 0/0: stay uniform then (a where, not an `if`, so that nothing syncs).
        p = torch.where(total > 0, root_second_moment / total, uniform)
        p = p * (1 - self.uniform_prob) + self.uniform_prob / T
        warm = (self.loss_counts >= self.history_per_term).all()
        return torch.where(warm, p, uniform)

    def sample(self, batch_size: int, generator: torch.Generator | None, device):
        """(timesteps (B,) int64, importance weights w = 1 / (T p_t) (B,) float32), both on `device`.

        The state moves to `device` on first use (the generator must live there too).
        """
        device = torch.device(device)
        if device.type != self.device.type or (device.index is not None and device.index != self.device.index):
            self.to(device)
        p = self.probabilities()
        timesteps = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[timesteps])
        return timesteps, weights.float()

    def update(self, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses (unweighted, detached) at their timesteps, as if one at a time in the given order.

        Call it on every process with the same tensors (the losses of all processes, gathered in one fixed order),
        so that every process keeps the same state and draws the same p.
        """
        t = timesteps.detach().to(self.device).long().flatten()
        values = losses.detach().to(self.device, torch.float64).flatten()
        if t.numel() == 0:
            return
        H = self.history_per_term
        # Group the batch by t, batch order kept within a group (stable sort), and rank each loss within its group.
        order = torch.argsort(t, stable=True)
        t, values = t[order], values[order]
        first = torch.searchsorted(t, t)  # where each loss's group starts
        group_size = torch.searchsorted(t, t, right=True) - first
        rank = torch.arange(len(t), device=self.device) - first
        # One at a time, loss `rank` of t would go to slot (count_t + rank) % H, overwritten by every later loss of t
        # with the same slot. Each write carries the value of the LAST loss landing in its slot, so the several writes
        # to one slot (more than H losses of one t) agree and the result does not depend on which one wins.
        last_rank = rank + H * torch.div(group_size - 1 - rank, H, rounding_mode="floor")
        slot = (self.loss_counts[t] + rank) % H
        self.loss_history[t, slot] = values[first + last_rank]
        self.loss_counts[t] = self.loss_counts[t] + group_size  # the same value for every loss of a group, too

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        history, counts = state["loss_history"], state["loss_counts"]
        if history.shape != self.loss_history.shape or counts.shape != self.loss_counts.shape:
            raise ValueError(
                f"The saved loss history has shape {tuple(history.shape)} but this sampler keeps"
                f" {tuple(self.loss_history.shape)} (num_timesteps x history_per_term): resume with the same"
                " num_train_timesteps."
            )
        self.loss_history.copy_(history)
        self.loss_counts.copy_(counts)


TIMESTEP_SAMPLERS = {"uniform": UniformSampler, "loss-second-moment": LossSecondMomentSampler}
assert tuple(TIMESTEP_SAMPLERS) == TIMESTEP_SAMPLER_NAMES  # what --timestep_sampler offers (ddpm_hf/choices.py)


def make_timestep_sampler(name: str, num_timesteps: int, device=None):
    """The sampler of a `--timestep_sampler` choice."""
    if name in TIMESTEP_SAMPLERS:
        return TIMESTEP_SAMPLERS[name](num_timesteps, device=device)
    raise ValueError(f"Unknown timestep sampler {name!r}: choose one of {', '.join(TIMESTEP_SAMPLERS)}.")
