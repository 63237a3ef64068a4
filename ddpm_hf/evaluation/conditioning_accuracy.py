# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Does the condition (a prompt, a class) steer the image? A digit classifier fitted on real digits judges samples.

The embedded digit sets carry their labels, so a support-vector classifier (RBF kernel) on their pixels is a cheap,
independent judge (96% held-out accuracy on 16x16 MNIST, 99% on the 8x8 digits): sample each digit's prompt
("a handwritten digit seven") or class, classify the samples, and count how often the classifier names the wanted
digit. Chance is 0.1; a model that ignores its condition scores about that.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..data.sources import load_image_dataset
from ..text.captions import digit_caption


@dataclass
class DigitClassifier:
    """An RBF support-vector classifier on [0, 1] pixels of `resolution` x `resolution` digits, and its held-out
    accuracy."""

    model: object  # sklearn.svm.SVC
    resolution: int
    heldout_accuracy: float

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Digit labels of (N, H, W) or (N, 1, H, W) images in [0, 1]."""
        return self.model.predict(images.reshape(len(images), -1))


def fit_digit_classifier(embedded: str = "mnist", resolution: int = 16, seed: int = 0) -> DigitClassifier:
    """Fit on 80% of an embedded digit set (`"mnist"` or `"digits"`), report the accuracy on the other 20%."""
    from sklearn.svm import SVC

    data = load_image_dataset(embedded=embedded, resolution=resolution, channels=1, show_progress=False)
    pixels = data.pixels.reshape(len(data), -1).numpy().astype(np.float64) / 255.0
    labels = data.labels.numpy()
    order = np.random.default_rng(seed).permutation(len(data))
    split = int(0.8 * len(data))
    train, heldout = order[:split], order[split:]
    model = SVC(C=5.0, gamma="scale").fit(pixels[train], labels[train])
    accuracy = float((model.predict(pixels[heldout]) == labels[heldout]).mean())
    return DigitClassifier(model, resolution, accuracy)


@dataclass
class PromptAccuracy:
    accuracy: float  # the fraction of samples classified as their prompt's digit
    per_digit: list[float]  # the same, per prompted digit 0..9
    images: np.ndarray  # (10 x images_per_digit, H, W) in [0, 1], prompt by prompt


@torch.no_grad()
def prompted_digit_accuracy(
    pipeline,
    classifier: DigitClassifier,
    *,
    images_per_digit: int = 10,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 100,
    seed: int = 0,
    phrasing: int = 0,
) -> PromptAccuracy:
    """Sample `images_per_digit` images for each digit's prompt (`digit_caption(d, phrasing)`) and classify them."""
    prompts = [digit_caption(digit, phrasing) for digit in range(10)]
    images = pipeline(
        prompt=prompts, num_images_per_prompt=images_per_digit, guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps, generator=torch.Generator().manual_seed(seed), output_type="np",
    ).images[..., 0]  # (10 x k, H, W), prompt by prompt
    return judge(classifier, images, np.repeat(np.arange(10), images_per_digit))


@torch.no_grad()
def class_label_accuracy(
    pipeline,
    classifier: DigitClassifier,
    *,
    images_per_class: int = 10,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 100,
    seed: int = 0,
) -> PromptAccuracy:
    """Sample `images_per_class` images of each digit class 0..9 of a class-conditional pipeline and classify them."""
    wanted = np.repeat(np.arange(10), images_per_class)
    images = pipeline(
        batch_size=len(wanted), class_labels=wanted.tolist(), guidance_scale=guidance_scale,
        num_inference_steps=num_inference_steps, generator=torch.Generator().manual_seed(seed), output_type="np",
    ).images[..., 0]
    return judge(classifier, images, wanted)


def judge(classifier: DigitClassifier, images: np.ndarray, wanted: np.ndarray) -> PromptAccuracy:
    """How many of `images` (N, H, W) in [0, 1] the classifier names as their `wanted` digit, overall and per digit."""
    if images.shape[1:] != (classifier.resolution, classifier.resolution):
        raise ValueError(f"the pipeline draws {images.shape[1:]} images but the classifier was fitted on"
                         f" {classifier.resolution}x{classifier.resolution}: fit it at the pipeline's resolution")
    correct = classifier.predict(images) == wanted
    per_digit = [float(correct[wanted == digit].mean()) for digit in range(10)]
    return PromptAccuracy(float(correct.mean()), per_digit, images)
