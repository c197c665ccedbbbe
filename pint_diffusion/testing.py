"""Tiny diffusers components with random weights: a real Stable Diffusion pipeline, offline.

The test suite, the examples, the docs and the benchmarks use them wherever no weights can
be downloaded; diffusers and transformers are imported inside the functions.

Everything is built from configs (as diffusers' own tests do), float32, on the CPU, and small
enough that a 10-step pipeline call takes well under a second:

- :func:`tiny_tokenizer`: a ``CLIPTokenizer`` from an in-memory byte-level BPE vocabulary and
  merges, written to a temporary directory (no download);
- :func:`tiny_text_encoder`, :func:`tiny_unet`, :func:`tiny_vae`: ``CLIPTextModel``,
  ``UNet2DConditionModel``, ``AutoencoderKL``;
- :func:`tiny_sd_components` and :func:`tiny_sd_pipeline`: a ``StableDiffusionPipeline`` of
  these with a given scheduler;
- :func:`tiny_class_unet`: a class-conditional ``UNet2DModel`` (``num_class_embeds``).

Example::

    from diffusers import DDIMScheduler
    from pint_diffusion.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(DDIMScheduler(clip_sample=False))
    latents = pipe("a cat", num_inference_steps=5, output_type="latent").images
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

#: Text embedding width of :func:`tiny_text_encoder` (the UNet's cross-attention dim).
HIDDEN = 32
#: Tokenizer context length (``model_max_length``), short to keep the text encoder fast.
MAX_LENGTH = 16
#: Latent channels of :func:`tiny_unet` / :func:`tiny_vae`.
LATENT_CHANNELS = 4


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def tiny_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A CLIP byte-level BPE vocabulary: every byte character, alone and word-final (``</w>``),
    a handful of merges for common English pieces, and the two special tokens (last)."""
    base = list(_bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base]
    merges = [
        "t h",
        "th e</w>",
        "a n",
        "an d</w>",
        "c a",
        "ca t</w>",
        "d o",
        "do g</w>",
        "i n",
        "o f</w>",
    ]
    for merge in merges:
        merged = merge.replace(" ", "")
        if merged not in tokens:
            tokens.append(merged)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def tiny_tokenizer() -> Any:
    """A ``CLIPTokenizer`` built from :func:`tiny_vocab_and_merges` (files in a temp dir)."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab_and_merges()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizer(
            str(Path(tmp) / "vocab.json"),
            str(Path(tmp) / "merges.txt"),
            model_max_length=MAX_LENGTH,
        )
    return tok


def tiny_text_encoder(seed: int = 0) -> Any:
    """A 2-layer ``CLIPTextModel`` of width :data:`HIDDEN` matching :func:`tiny_tokenizer`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = tiny_vocab_and_merges()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def tiny_unet(seed: int = 0, **config: Any) -> Any:
    """A tiny ``UNet2DConditionModel`` (8x8 latents, 4 channels, cross-attention dim 32)."""
    from diffusers import UNet2DConditionModel

    kwargs: dict[str, Any] = dict(
        sample_size=8,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    kwargs.update(config)
    torch.manual_seed(seed)
    return UNet2DConditionModel(**kwargs).eval()


def tiny_vae(seed: int = 0) -> Any:
    """A tiny ``AutoencoderKL`` (3 image channels, :data:`LATENT_CHANNELS` latent channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def tiny_sd_components(seed: int = 0, **unet_config: Any) -> dict[str, Any]:
    """The non-scheduler components of :func:`tiny_sd_pipeline` (build once, reuse: ~2 s)."""
    return dict(
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(seed),
        tokenizer=tiny_tokenizer(),
        unet=tiny_unet(seed, **unet_config),
    )


def tiny_sd_pipeline(
    scheduler: Any, seed: int = 0, components: dict[str, Any] | None = None, **unet_config: Any
) -> Any:
    """A ``StableDiffusionPipeline`` of the tiny components with ``scheduler`` (no safety checker).

    Its image size is 16 (latents 4x8x8); ``unet_config`` overrides the UNet's config.
    ``components`` (from :func:`tiny_sd_components`) reuses already built models; note that
    diffusers' pipeline constructor may rewrite the scheduler's config (``steps_offset`` to 1,
    ``clip_sample`` to False) with a deprecation warning.
    """
    from diffusers import StableDiffusionPipeline

    if components is None:
        components = tiny_sd_components(seed, **unet_config)
    pipe = StableDiffusionPipeline(
        **components,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_class_unet(num_classes: int = 10, seed: int = 0, **config: Any) -> Any:
    """A tiny class-conditional ``UNet2DModel``: 8x8, 1 channel, ``num_classes + 1`` class
    embeddings (the last, ``num_classes``, serves as the null class for guidance)."""
    from diffusers import UNet2DModel

    kwargs: dict[str, Any] = dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=4,
        num_class_embeds=num_classes + 1,
    )
    kwargs.update(config)
    torch.manual_seed(seed)
    return UNet2DModel(**kwargs).eval()
