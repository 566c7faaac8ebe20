"""The built-in ``demo`` model: the real diffusers SD3 pipeline with tiny random weights.

Every class is the one a real Stable Diffusion 3.5 checkpoint loads (SD3Transformer2DModel, two
CLIPTextModelWithProjection, T5EncoderModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler), so
the engine, the precision policy and the FP8 paths run exactly as they do for real weights, only
small enough for a CPU. The latent geometry is SD3's own (16 latent channels, VAE /8,
transformer patch 2): a 256x256 image is 16x16 = 256 image tokens, which keeps a 20-step
generation with guidance well under a second on a laptop-class CPU.

Weights come from a fixed seed per component, so every build is bit-identical; tokenizers are
built in code so nothing is read from disk or the network.
"""

from __future__ import annotations

import hashlib

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
    StableDiffusion3Pipeline,
)
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

# Bump when any size or seed below changes: it is part of the demo's weights revision.
DEMO_FORMAT = "demo-v1"

CLIP_MAX_TOKENS = 77
T5_MAX_TOKENS = 256

# Widths chosen like SD3's: CLIP-L is narrower than CLIP-G, both together fit inside T5's width
# (the pipeline pads the concatenated CLIP states to T5's width), and the pooled projection the
# transformer sees is CLIP-L's plus CLIP-G's projection.
_CLIP_L_WIDTH = 32
_CLIP_G_WIDTH = 64
_T5_WIDTH = 128
_TRANSFORMER_HEADS = 4
_TRANSFORMER_HEAD_DIM = 16

# One seed per component, so changing one component never changes another's weights.
_SEEDS = {"text_encoder": 1, "text_encoder_2": 2, "text_encoder_3": 3, "transformer": 4, "vae": 5}


def build_demo_pipeline() -> StableDiffusion3Pipeline:
    """Builds the demo pipeline in float32 on the CPU (the precision policy casts it later)."""
    clip_tokenizer = _clip_tokenizer()
    t5_tokenizer = _t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(),
        text_encoder=_clip("text_encoder", _CLIP_L_WIDTH, len(clip_tokenizer)),
        tokenizer=clip_tokenizer,
        text_encoder_2=_clip("text_encoder_2", _CLIP_G_WIDTH, len(clip_tokenizer)),
        tokenizer_2=clip_tokenizer,
        text_encoder_3=_t5(len(t5_tokenizer)),
        tokenizer_3=t5_tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def demo_weights_revision(pipe: StableDiffusion3Pipeline) -> str:
    """``demo-v1-`` plus a short sha256 of every component's state dict (names, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae"):
        module = getattr(pipe, name)
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            # Hash the raw bytes through uint8 so every dtype (bf16 included) hashes the same way.
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(raw.numpy().tobytes())
    return f"{DEMO_FORMAT}-{digest.hexdigest()[:12]}"


def _clip_tokenizer() -> CLIPTokenizer:
    # A byte-level vocabulary without merges: every byte is a token, and every byte again with
    # CLIP's end-of-word suffix, so any text tokenizes. The order is fixed (sorted) for determinism.
    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in alphabet:
        vocab[char] = len(vocab)
    for char in alphabet:
        vocab[char + "</w>"] = len(vocab)
    # model_max_length must be set: the default is a huge sentinel that overflows the pipeline.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_TOKENS)


def _t5_tokenizer() -> T5Tokenizer:
    # A unigram vocabulary of printable ASCII characters behind T5's three special tokens.
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(chr(code), -5.0) for code in range(33, 127)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=T5_MAX_TOKENS)


def _clip(component: str, width: int, vocab_size: int) -> CLIPTextModelWithProjection:
    torch.manual_seed(_SEEDS[component])
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_MAX_TOKENS,
        projection_dim=width,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(config).eval()


def _t5(vocab_size: int) -> T5EncoderModel:
    torch.manual_seed(_SEEDS["text_encoder_3"])
    config = T5Config(
        vocab_size=vocab_size,
        d_model=_T5_WIDTH,
        d_kv=32,
        d_ff=2 * _T5_WIDTH,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config).eval()


def _transformer() -> SD3Transformer2DModel:
    torch.manual_seed(_SEEDS["transformer"])
    inner_dim = _TRANSFORMER_HEADS * _TRANSFORMER_HEAD_DIM
    return SD3Transformer2DModel(
        sample_size=32,  # latent size of the default 256x256 image
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=_TRANSFORMER_HEAD_DIM,
        num_attention_heads=_TRANSFORMER_HEADS,
        joint_attention_dim=_T5_WIDTH,
        caption_projection_dim=inner_dim,
        pooled_projection_dim=_CLIP_L_WIDTH + _CLIP_G_WIDTH,
        # In patches: 32 patches x 2 x 8 = 512 pixels, the demo's size limit. Kept that small
        # because this 16-bit grid would otherwise outweigh the tiny model's Linear weights.
        pos_embed_max_size=32,
        # SD3.5's additions (a dual-attention block and RMS q/k norm), so their code runs too.
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    ).eval()


def _vae() -> AutoencoderKL:
    torch.manual_seed(_SEEDS["vae"])
    # Four blocks = three downsamplings = SD3's /8; SD3's scaling and shift factors; no quant convs.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=256,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
