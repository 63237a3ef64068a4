# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The mathematics of DDPM, with no files, plots or command lines:

- `losses`: the Gaussian terms (normal KL, the discretized-Gaussian decoder, mean_flat), the bound's term at a timestep
  (`vb_terms_bpd`, L_t in bits/dim) and the training losses L_simple / L_vlb / hybrid;
- `likelihood`: the variational bound in bits/dim over a whole chain: its prior, and L_t at every step;
- `timestep_samplers`: uniform and importance-sampled timesteps, one registry.

The reverse step itself lives in `ddpm_hf.scheduling_ddpm_posterior`, a file shipped into saved pipelines.
"""
