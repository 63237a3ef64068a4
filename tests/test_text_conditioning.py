# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""ddpm_hf.text: loading CLIP parts, the conditional UNet config, caption encodings and dropout.

Real transformers/diffusers objects with tiny configs, built offline; the Hub is reached only through the fake Hub.
"""

import json
import math

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from huggingface_hub import constants as hub_constants
from support.models import tiny_text_to_image_pipeline
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from ddpm_hf.data import ImageDataset
from ddpm_hf.diffusion.guidance import drop_conditions
from ddpm_hf.presets import PresetError, available_presets, load_preset, unet_config_for_data
from ddpm_hf.text.captions import digit_caption
from ddpm_hf.text.components import BUILTIN_TEXT_ENCODERS, TextEncoderError, load_text_components
from ddpm_hf.text.conditioning import (
    CaptionBank,
    conditional_unet_config,
    default_validation_prompts,
    encode_token_ids,
    pooling_heads,
    tokenize_captions,
)
from ddpm_hf.text.encoders import build_clip_text_encoder, write_clip_tokenizer_files

CAPTIONS = [
    "a handwritten digit seven",
    "the number 3 written by hand",
    "a handwritten digit seven",
    "",
    "digit " * 100,  # longer than 77 tokens: truncated
    "the number 3 written by hand",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_clip_tokenizer_files(str(tmp_path_factory.mktemp("clip-tokenizer")))


@pytest.fixture(scope="module")
def pipe(tokenizer_dir):
    return tiny_text_to_image_pipeline(tokenizer_dir)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def ids_of(tokenizer, text="a photo of a cat"):
    return tokenizer(text).input_ids


# ----------------------------------------------------------------------------------------------------------------
# load_text_components
# ----------------------------------------------------------------------------------------------------------------
def test_builtin_encoders_are_seeded_offline_and_leave_the_global_rng_alone():
    assert BUILTIN_TEXT_ENCODERS == ("builtin:tiny", "builtin:small")
    state = torch.get_rng_state()
    tokenizer, encoder = load_text_components("builtin:tiny", seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(tokenizer, CLIPTokenizer) and len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert ids_of(tokenizer) == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert encoder.config.hidden_size == 32 and not encoder.training and encoder.dtype == torch.float32
    assert same_weights(encoder, load_text_components("builtin:tiny", seed=1)[1])
    assert not same_weights(encoder, load_text_components("builtin:tiny", seed=2)[1])
    assert load_text_components("builtin:small")[1].config.hidden_size == 128
    with pytest.raises(TextEncoderError, match="builtin:huge.*builtin:tiny, builtin:small"):
        load_text_components("builtin:huge")


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_builtin_encoders_tell_the_digit_words_apart(tokenizer_dir, preset):
    """The ten captions "a handwritten digit <word>" get states far apart (rms distance per entry), about five times
    further than at CLIP's own initialisation scale, where a UNet cannot learn to read them in a small budget."""
    ids = tokenize_captions(CLIPTokenizer.from_pretrained(tokenizer_dir), [digit_caption(d, 0) for d in range(10)])

    def mean_distance(encoder):
        with torch.no_grad():
            states = encoder(ids).last_hidden_state.flatten(1)
        distances = torch.cdist(states, states) / math.sqrt(states.shape[1])
        return distances[~torch.eye(10, dtype=torch.bool)].mean().item()

    builtin = mean_distance(build_clip_text_encoder(preset, seed=0))
    clip_scale = mean_distance(build_clip_text_encoder(preset, seed=0, initializer_factor=1.0))
    assert builtin > 0.4 and builtin > 3 * clip_scale, (builtin, clip_scale)


def test_saved_pipeline_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    tokenizer, encoder = load_text_components(str(tmp_path))
    assert same_weights(encoder, pipe.text_encoder) and encoder.dtype == torch.float32 and not encoder.training
    assert ids_of(tokenizer) == ids_of(pipe.tokenizer) and tokenizer.model_max_length == 77


def test_folder_with_both_parts_at_its_top(pipe, tmp_path):
    pipe.text_encoder.to(torch.float16).save_pretrained(tmp_path)  # loaded back in float32
    pipe.text_encoder.to(torch.float32)
    pipe.tokenizer.save_pretrained(tmp_path)
    tokenizer, encoder = load_text_components(tmp_path)
    assert encoder.dtype == torch.float32
    assert all(torch.equal(p, q.half().float()) for p, q in zip(encoder.parameters(), pipe.text_encoder.parameters()))
    assert ids_of(tokenizer) == ids_of(pipe.tokenizer)


def test_clip_model_checkpoint_gives_its_text_half(tokenizer_dir, tmp_path):
    text = build_clip_text_encoder("tiny", seed=3).config.to_dict()
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=8,
                  patch_size=4)
    torch.manual_seed(3)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    clip.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "clip"
    with pytest.raises(TextEncoderError, match="no tokenizer.*vocab.json and merges.txt"):
        load_text_components(str(tmp_path))
    write_clip_tokenizer_files(str(tmp_path))
    tokenizer, encoder = load_text_components(str(tmp_path))
    ids = tokenize_captions(tokenizer, ["a handwritten digit seven", ""])
    with torch.no_grad():
        assert torch.equal(encoder(ids)[0], clip.text_model(ids)[0])


def test_local_folder_errors_are_one_line_and_name_the_path(pipe, tmp_path):
    def error(path):
        with pytest.raises(TextEncoderError) as info:
            load_text_components(str(path))
        message = str(info.value)
        assert "\n" not in message and str(path) in message
        return message

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "neither text_encoder/config.json" in error(empty)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    pipe.text_encoder.config.to_json_file(str(no_weights / "config.json"))
    assert "no weights" in error(no_weights)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "'bert' model" in error(other)
    a_file = tmp_path / "config.json"
    a_file.write_text("{}")
    assert "is a file" in error(a_file)
    no_tokenizer = tmp_path / "pipeline"
    pipe.save_pretrained(no_tokenizer)
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (no_tokenizer / "tokenizer" / name).unlink(missing_ok=True)
    assert "no tokenizer" in error(no_tokenizer)
    short = tmp_path / "short-encoder"
    build_clip_text_encoder("tiny", max_position_embeddings=16).save_pretrained(short)
    pipe.tokenizer.save_pretrained(short)
    assert "pads prompts to 77 tokens but the encoder has 16 positions" in error(short)


def test_hub_id_offline_without_cache_says_what_to_do(offline):
    with pytest.raises(TextEncoderError) as info:
        load_text_components("openai/clip-vit-base-patch32")
    message = str(info.value)
    assert "'openai/clip-vit-base-patch32'" in message and "builtin:tiny" in message and "local folder" in message
    assert "go online" in message and "HF_HUB_OFFLINE" in message and "\n" not in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(TextEncoderError, match="neither a local folder nor a Hub id"):
        load_text_components("no/such//folder")


def test_hub_ids_in_both_layouts_online_then_from_the_cache(pipe, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from support.hub_clients import this_process_on
    from support.hub_server import HubServer

    clip_layout = tmp_path / "clip"
    pipe.text_encoder.save_pretrained(clip_layout)
    pipe.tokenizer.save_pretrained(clip_layout)
    pipeline_layout = tmp_path / "pipeline"
    pipe.save_pretrained(pipeline_layout)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with HubServer(token="hf_test_token") as hub, this_process_on(hub):
        api = HfApi(endpoint=hub.url, token="hf_test_token")
        for repo, folder in (("someone/clip", clip_layout), ("someone/pipe", pipeline_layout)):
            api.create_repo(repo)
            api.upload_folder(repo_id=repo, folder_path=str(folder))
        for repo in ("someone/clip", "someone/pipe"):
            tokenizer, encoder = load_text_components(repo)
            assert same_weights(encoder, pipe.text_encoder) and ids_of(tokenizer) == ids_of(pipe.tokenizer)
        downloaded = {request.path for request in hub.requests if request.method == "GET"}
        assert any("text_encoder/model.safetensors" in path for path in downloaded)
        assert not any("unet" in path for path in downloaded)  # a pipeline repo's UNet is not fetched
        with pytest.raises(TextEncoderError, match="'someone/missing'.*builtin:tiny"):
            load_text_components("someone/missing")
        with pytest.MonkeyPatch.context() as offline:  # undone before this_process_on's patches, as it must be
            offline.setattr(hub_constants, "HF_HUB_OFFLINE", True)
            seen = len(hub.requests)
            for repo in ("someone/clip", "someone/pipe"):  # offline: from the cache
                assert same_weights(load_text_components(repo)[1], pipe.text_encoder)
            assert len(hub.requests) == seen


# ----------------------------------------------------------------------------------------------------------------
# conditional_unet_config
# ----------------------------------------------------------------------------------------------------------------
def preset_config(name):
    resolution = 32 if name == "ddpm-cifar10" else 16
    channels = 3 if name == "ddpm-cifar10" else 1
    return unet_config_for_data(load_preset(name).unet, channels=channels, resolution=resolution,
                                learned_variance=False)


def resnet_shapes(model):
    return [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, ResnetBlock2D)]


def test_shipped_presets_are_covered():
    assert set(available_presets()) == {"tiny", "mnist-16", "mnist-16-text", "mnist-16-class", "ddpm-cifar10"}


@pytest.mark.parametrize(
    "name, down, up, heads",
    [
        ("tiny", ["DownBlock2D", "CrossAttnDownBlock2D"], ["CrossAttnUpBlock2D", "UpBlock2D"], [2, 4]),
        # No attention level: the text is attended to in the 4x4 mid block only (and joins the time embedding).
        ("mnist-16", ["DownBlock2D"] * 3, ["UpBlock2D"] * 3, [2, 4, 8]),
    ],
)
def test_small_presets_build_cross_attend_and_keep_their_resnets(name, down, up, heads):
    plain = preset_config(name)
    config = conditional_unet_config(plain, cross_attention_dim=32)
    assert config["down_block_types"] == down and config["up_block_types"] == up
    assert config["mid_block_type"] == "UNetMidBlock2DCrossAttn" and config["attention_head_dim"] == heads
    json.dumps(config)
    torch.manual_seed(0)
    model = UNet2DConditionModel.from_config(config).eval()
    unconditional = UNet2DModel.from_config(plain)
    for key in ("block_out_channels", "layers_per_block", "norm_num_groups", "norm_eps", "in_channels",
                "out_channels", "sample_size", "dropout", "flip_sin_to_cos", "freq_shift", "act_fn"):
        assert model.config[key] == unconditional.config[key], key
    assert resnet_shapes(model) == resnet_shapes(unconditional)
    # The heads of the replaced self-attention: width 8 (tiny, mnist-16's mid block) -> channels / 8 heads.
    attention_heads = {m.to_q.in_features: m.heads for n, m in model.named_modules() if n.endswith("attn1")}
    assert all(heads_ == channels // 8 for channels, heads_ in attention_heads.items())
    x, t = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 500])
    text_a, text_b = torch.randn(2, 2, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out_a = model(x, t, encoder_hidden_states=text_a).sample
        out_b = model(x, t, encoder_hidden_states=text_b).sample
    assert out_a.shape == x.shape and (out_a - out_b).abs().max() > 1e-4
    with pytest.raises(RuntimeError):
        model(x, t, encoder_hidden_states=torch.zeros(2, 77, 16))
    # The text also reaches every resnet through the time embedding (attention-pooled, one 32-wide head here).
    assert config["addition_embed_type"] == "text" and model.add_embedding.pool.num_heads == 1
    with torch.no_grad():
        pooled_a, pooled_b = model.add_embedding(text_a), model.add_embedding(text_b)
    assert pooled_a.shape == (2, model.time_embedding.linear_2.out_features)
    assert (pooled_a - pooled_b).abs().max() > 1e-3


@pytest.mark.parametrize("width, heads", [(32, 1), (96, 1), (128, 2), (512, 8), (768, 12)])
def test_text_pooling_heads_are_64_wide_and_divide_the_encoder_width(width, heads):
    assert pooling_heads(width) == heads and width % heads == 0


def test_cifar10_preset_config_counts_without_allocating():
    config = conditional_unet_config(preset_config("ddpm-cifar10"), cross_attention_dim=512)
    assert config["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]
    assert config["up_block_types"] == ["UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    assert config["attention_head_dim"] == [1, 1, 1, 1]  # the paper's single-head attention
    assert config["dropout"] == 0.1 and config["flip_sin_to_cos"] is False and config["freq_shift"] == 1
    assert config["downsample_padding"] == 0 and config["norm_eps"] == 1e-6 and config["in_channels"] == 3
    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(config)
        plain = UNet2DModel.from_config(preset_config("ddpm-cifar10"))
    count = sum(p.numel() for p in model.parameters())
    assert resnet_shapes(model) == resnet_shapes(plain)
    assert 35.7e6 < sum(p.numel() for p in plain.parameters()) < count < 50e6


@pytest.mark.parametrize("name", ["tiny", "mnist-16", "ddpm-cifar10"])
def test_raw_preset_dicts_build_like_unet2dmodel_would(name):
    raw = load_preset(name).unet
    config = conditional_unet_config(raw, cross_attention_dim=64)
    assert config["in_channels"] == config["out_channels"] == 3 and config["sample_size"] is None
    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(config)
        plain = UNet2DModel.from_config(raw)
    assert resnet_shapes(model) == resnet_shapes(plain)
    assert model.config.cross_attention_dim == 64


def test_conditional_unet_config_errors():
    base = load_preset("tiny").unet
    with pytest.raises(PresetError, match="downsample_type='resnet'"):
        conditional_unet_config({**base, "downsample_type": "resnet"}, 32)
    with pytest.raises(PresetError, match="AttnSkipDownBlock2D"):
        conditional_unet_config({**base, "down_block_types": ["DownBlock2D", "AttnSkipDownBlock2D"]}, 32)
    with pytest.raises(PresetError, match="cross_attention_dim"):
        conditional_unet_config(base, 0)
    with pytest.raises(PresetError, match="not_a_key"):
        conditional_unet_config({**base, "not_a_key": 1}, 32)
    with pytest.raises(PresetError, match="2 levels"):
        conditional_unet_config({**base, "up_block_types": ["UpBlock2D"]}, 32)


# ----------------------------------------------------------------------------------------------------------------
# Caption encodings
# ----------------------------------------------------------------------------------------------------------------
def count_calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda *args: calls.append(1))


def test_frozen_embeddings_equal_encode_prompt_bit_for_bit(pipe):
    bank = CaptionBank(CAPTIONS, pipe.tokenizer)
    assert bank.precompute_embeddings(pipe.text_encoder, batch_size=2)
    calls, handle = count_calls(pipe.text_encoder)
    try:
        indices = bank.caption_indices[torch.tensor([4, 0, 3, 1, 2])]
        embeds = bank.embeddings_for(indices)
    finally:
        handle.remove()
    assert calls == []  # no encoder call per step
    captions = [CAPTIONS[i] for i in (4, 0, 3, 1, 2)]
    assert torch.equal(embeds, pipe.encode_prompt(captions, "cpu", 1, False)[0])
    for index, caption in zip(indices, captions):  # whatever the batch
        assert torch.equal(bank.embeddings_for(index[None]), pipe.encode_prompt([caption], "cpu", 1, False)[0])
    assert not embeds.requires_grad and embeds.shape == (5, 77, 32)
    empty = pipe.encode_prompt([""], "cpu", 1, False)[0]
    assert torch.equal(bank.embeddings_for(torch.tensor([bank.empty_index])), empty)


def test_tokenize_and_trainable_encoding_match_encode_prompt(pipe):
    ids = tokenize_captions(pipe.tokenizer, CAPTIONS)
    assert ids.dtype == torch.long and ids.shape == (len(CAPTIONS), 77)
    assert ids[3].tolist() == [49406] + [49407] * 76  # the empty prompt: start, then end/padding
    assert ids[4, -1] == 49407  # truncated, still ending with the end token
    bank = CaptionBank(CAPTIONS, pipe.tokenizer)
    indices = bank.caption_indices
    encoded = encode_token_ids(pipe.text_encoder, bank.token_ids_for(indices))  # with gradients
    assert encoded.requires_grad
    assert torch.equal(encoded.detach(), pipe.encode_prompt(CAPTIONS, "cpu", 1, False)[0])
    assert tokenize_captions(pipe.tokenizer, []).shape == (0, 77)


def test_caption_bank_deduplicates_and_always_holds_the_empty_prompt(pipe):
    captions = ["b", "a", "b", "c"]
    bank = CaptionBank(captions, pipe.tokenizer)
    assert bank.captions == ["", "b", "a", "c"] and bank.empty_index == 0 and len(bank) == 4
    assert bank.caption_indices.tolist() == [1, 2, 1, 3] and bank.caption_indices.dtype == torch.long
    assert CaptionBank(["", "a", ""], pipe.tokenizer).caption_indices.tolist() == [0, 1, 0]
    assert torch.equal(bank.token_ids, tokenize_captions(pipe.tokenizer, bank.captions))
    with pytest.raises(ValueError, match="strings"):
        CaptionBank(["a", None], pipe.tokenizer)


def test_precomputed_embeddings_use_the_encoder_dtype(pipe):
    bank = CaptionBank(CAPTIONS, pipe.tokenizer)
    encoder = build_clip_text_encoder("tiny", seed=0).to(torch.bfloat16).eval()
    bank.precompute_embeddings(encoder)
    assert bank.embeddings.dtype == torch.bfloat16 and bank.embeddings.shape == (len(bank), 77, 32)


def test_too_many_captions_are_encoded_per_batch(pipe):
    small = CaptionBank(CAPTIONS, pipe.tokenizer)
    small.precompute_embeddings(pipe.text_encoder)
    large = CaptionBank(CAPTIONS, pipe.tokenizer, max_precomputed=3)
    assert large.captions == small.captions and not large.precomputable and large.token_ids is None
    assert not large.precompute_embeddings(pipe.text_encoder) and large.embeddings is None
    indices = torch.tensor([2, 0, 1])
    assert torch.equal(large.token_ids_for(indices), small.token_ids_for(indices))
    calls, handle = count_calls(pipe.text_encoder)
    try:
        embeds = large.embeddings_for(indices, pipe.text_encoder)
    finally:
        handle.remove()
    assert calls == [1] and not embeds.requires_grad and torch.equal(embeds, small.embeddings_for(indices))
    with pytest.raises(ValueError, match="precompute_embeddings"):
        large.embeddings_for(indices)


def test_bank_moves_with_to(pipe):
    bank = CaptionBank(CAPTIONS, pipe.tokenizer).to("meta")
    assert bank.caption_indices.device.type == "meta" and bank.token_ids.device.type == "meta"


# ----------------------------------------------------------------------------------------------------------------
# drop_conditions (ddpm_hf.diffusion.guidance)
# ----------------------------------------------------------------------------------------------------------------
def test_drop_conditions_statistics():
    n, p = 200_000, 0.1
    indices = torch.randint(1, 50, (n,), generator=torch.Generator().manual_seed(0))
    dropped = drop_conditions(indices, p, null_index=0, generator=torch.Generator().manual_seed(1))
    replaced = dropped == 0
    assert abs(replaced.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(dropped[~replaced], indices[~replaced])  # the others keep their caption
    assert dropped.dtype == torch.long and indices.min() > 0  # the input is not modified


def test_drop_conditions_edge_cases_and_determinism():
    indices = torch.arange(1, 1001)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(drop_conditions(indices, 0.0, 0, generator), indices)
    assert torch.equal(drop_conditions(indices, 1.0, 7, generator), torch.full_like(indices, 7))
    a = drop_conditions(indices, 0.5, 0, torch.Generator().manual_seed(3))
    b = drop_conditions(indices, 0.5, 0, torch.Generator().manual_seed(3))
    c = drop_conditions(indices, 0.5, 0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The generator advances the same whatever the probability, so other draws do not depend on it.
    states = []
    for probability in (0.0, 0.3, 1.0):
        g = torch.Generator().manual_seed(5)
        drop_conditions(indices, probability, 0, g)
        states.append(g.get_state())
    assert all(torch.equal(states[0], s) for s in states)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            drop_conditions(indices, bad, 0, generator)


# ----------------------------------------------------------------------------------------------------------------
# default_validation_prompts
# ----------------------------------------------------------------------------------------------------------------
def dataset(captions, labels=None, source="/data/pictures"):
    pixels = torch.zeros(len(captions), 1, 4, 4, dtype=torch.uint8)
    return ImageDataset(pixels=pixels, captions=captions, labels=labels, skipped=[], source=source)


def test_default_validation_prompts():
    digits = dataset(["a handwritten four", "the digit 0"], labels=torch.tensor([4, 0]), source="embedded:mnist")
    prompts = default_validation_prompts(digits)
    assert prompts == [digit_caption(d, 0) for d in range(10)] and prompts[7] == "a handwritten digit seven"
    folder = dataset(["a dog", "", "a cat", "a dog", "a bird", "a fish", "a cow"])
    assert default_validation_prompts(folder) == ["a dog", "a cat", "a bird", "a fish"]
    assert default_validation_prompts(folder, limit=2) == ["a dog", "a cat"]
    with pytest.raises(ValueError, match="--validation_prompts"):
        default_validation_prompts(dataset(["", " "]))
    with pytest.raises(ValueError, match="no captions"):
        default_validation_prompts(ImageDataset(pixels=torch.zeros(1, 1, 4, 4, dtype=torch.uint8), captions=None,
                                                labels=None, skipped=[], source="/data/pictures"))
