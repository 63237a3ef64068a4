# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Text for `DDPMTextToImagePipeline`:

- `encoders`: offline CLIP parts, the real tokenizer (its vocabulary ships with this package) and small text encoders;
- `captions`: the caption text of an image: the embedded digits' generated captions, a stored caption cell as text;
- `components`: the tokenizer and text encoder of a run, built in, from a folder or from the Hub;
- `conditioning`: the conditional UNet, captions -> token ids -> embeddings, classifier-free-guidance dropout.
"""
