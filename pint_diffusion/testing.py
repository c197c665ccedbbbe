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


SD_BETAS: dict[str, Any] = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
"""Stable Diffusion 1.x's noise schedule (the diffusers scheduler options)."""


def sd_schedulers() -> dict[str, Any]:
    """Every deterministic variance-preserving scheduler pint_diffusion covers, in Stable
    Diffusion's configuration: a name -> a function that builds a fresh scheduler (DDIM,
    Euler, Heun, KDPM2, DPM++ 2M/3M with and without Karras sigmas, UniPC of orders 2 and 3,
    PNDM, DEIS, LMS). diffusers is imported here."""
    import diffusers as d

    return {
        "ddim": lambda: d.DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1),
        "euler": lambda: d.EulerDiscreteScheduler(**SD_BETAS),
        "heun": lambda: d.HeunDiscreteScheduler(**SD_BETAS),
        "kdpm2": lambda: d.KDPM2DiscreteScheduler(**SD_BETAS),
        "dpm2m": lambda: d.DPMSolverMultistepScheduler(**SD_BETAS),
        "dpm2m-karras": lambda: d.DPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True),
        "dpm3m": lambda: d.DPMSolverMultistepScheduler(**SD_BETAS, solver_order=3),
        "dpm3m-karras": lambda: d.DPMSolverMultistepScheduler(**SD_BETAS, solver_order=3,
                                                              use_karras_sigmas=True),
        "unipc2": lambda: d.UniPCMultistepScheduler(**SD_BETAS, solver_order=2),
        "unipc3": lambda: d.UniPCMultistepScheduler(**SD_BETAS, solver_order=3),
        "pndm": lambda: d.PNDMScheduler(**SD_BETAS, skip_prk_steps=True),
        "deis": lambda: d.DEISMultistepScheduler(**SD_BETAS),
        "lms": lambda: d.LMSDiscreteScheduler(**SD_BETAS),
    }


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


# --------------------------------------------------------------------------- SDXL, SD3, Flux
#: Words of :func:`tiny_t5_tokenizer`'s vocabulary (any other word is ``<unk>``).
T5_WORDS = ("a", "an", "the", "cat", "dog", "red", "blue", "house", "castle", "of", "and", "in")


def tiny_t5_tokenizer(max_length: int = MAX_LENGTH) -> Any:
    """A ``T5TokenizerFast`` built offline: a word-level vocabulary of :data:`T5_WORDS`
    (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), whitespace pre-tokenizer, ``</s>`` appended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in T5_WORDS:
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                           unk_token="<unk>", extra_ids=0, model_max_length=max_length)


def tiny_t5_encoder(seed: int = 0, d_model: int = HIDDEN) -> Any:
    """A 2-layer ``T5EncoderModel`` of width ``d_model`` for :func:`tiny_t5_tokenizer`."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=3 + len(T5_WORDS), d_model=d_model, d_kv=8, d_ff=37,
                      num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval()


def tiny_clip_with_projection(seed: int = 0, projection_dim: int = HIDDEN) -> Any:
    """A 2-layer ``CLIPTextModelWithProjection`` (pooled text embeddings, SDXL/SD3)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = tiny_text_encoder(seed).config
    config = CLIPTextConfig(**{**config.to_dict(), "projection_dim": projection_dim})
    torch.manual_seed(seed + 1)
    return CLIPTextModelWithProjection(config).eval()


def _quiet(pipe: Any) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_components(seed: int = 0) -> dict[str, Any]:
    """The non-scheduler components of a tiny ``StableDiffusionXLPipeline`` (16x16 images):
    two CLIP text encoders (the second with projection), a UNet with SDXL's ``text_time``
    added conditioning, the tiny VAE."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * HIDDEN, attention_head_dim=4, norm_num_groups=4,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + HIDDEN, use_linear_projection=True,
    ).eval()
    return dict(vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed),
                text_encoder_2=tiny_clip_with_projection(seed), tokenizer=tiny_tokenizer(),
                tokenizer_2=tiny_tokenizer(), unet=unet)


def tiny_sdxl_pipeline(scheduler: Any, seed: int = 0,
                       components: dict[str, Any] | None = None) -> Any:
    """A tiny ``StableDiffusionXLPipeline`` with ``scheduler`` (no watermark, latents 4x8x8)."""
    from diffusers import StableDiffusionXLPipeline

    components = components or tiny_sdxl_components(seed)
    return _quiet(StableDiffusionXLPipeline(**components, scheduler=scheduler,
                                            add_watermarker=False))


def _flow_vae(seed: int, latent_channels: int) -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels, layers_per_block=1, norm_num_groups=4,
        sample_size=16, shift_factor=0.0609, scaling_factor=1.5035,
    ).eval()


def tiny_sd3_components(seed: int = 0) -> dict[str, Any]:
    """The non-scheduler components of a tiny ``StableDiffusion3Pipeline`` (16x16 images):
    two CLIP text encoders with projection, a T5 encoder with an offline tokenizer, a 1-layer
    ``SD3Transformer2DModel`` and a VAE with a shift factor."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=LATENT_CHANNELS, num_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=HIDDEN,
        joint_attention_dim=2 * HIDDEN, pooled_projection_dim=2 * HIDDEN,
        out_channels=LATENT_CHANNELS,
    ).eval()
    return dict(vae=_flow_vae(seed, LATENT_CHANNELS), text_encoder=tiny_clip_with_projection(seed),
                text_encoder_2=tiny_clip_with_projection(seed + 2), tokenizer=tiny_tokenizer(),
                tokenizer_2=tiny_tokenizer(), text_encoder_3=tiny_t5_encoder(seed, 2 * HIDDEN),
                tokenizer_3=tiny_t5_tokenizer(), transformer=transformer)


def tiny_sd3_pipeline(scheduler: Any = None, seed: int = 0,
                      components: dict[str, Any] | None = None) -> Any:
    """A tiny ``StableDiffusion3Pipeline`` (default scheduler: flow matching, shift 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    scheduler = scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0)
    components = components or tiny_sd3_components(seed)
    return _quiet(StableDiffusion3Pipeline(**components, scheduler=scheduler))


def tiny_flux_components(seed: int = 0, guidance_embeds: bool = True) -> dict[str, Any]:
    """The non-scheduler components of a tiny ``FluxPipeline`` (16x16 images, 1 latent
    channel packed 2x2 into 4): a CLIP text encoder, a T5 encoder with an offline tokenizer,
    a 1+1-layer ``FluxTransformer2DModel`` (``guidance_embeds``: a guidance-distilled model)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=HIDDEN, pooled_projection_dim=HIDDEN,
        axes_dims_rope=[4, 4, 8], guidance_embeds=guidance_embeds,
    ).eval()
    return dict(vae=_flow_vae(seed, 1), text_encoder=tiny_text_encoder(seed),
                tokenizer=tiny_tokenizer(), text_encoder_2=tiny_t5_encoder(seed),
                tokenizer_2=tiny_t5_tokenizer(), transformer=transformer)


def tiny_flux_pipeline(scheduler: Any = None, seed: int = 0,
                       components: dict[str, Any] | None = None) -> Any:
    """A tiny ``FluxPipeline`` (default scheduler: flow matching with dynamic shifting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    scheduler = scheduler or FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_image_seq_len=16, max_image_seq_len=256,
        base_shift=0.5, max_shift=1.15)
    components = components or tiny_flux_components(seed)
    return _quiet(FluxPipeline(**components, scheduler=scheduler))
