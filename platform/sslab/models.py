"""Model presets, built from ``transformers`` configs (never downloaded), and FLOP accounting."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, BertConfig, ModernBertConfig, PretrainedConfig, PreTrainedModel, RobertaConfig

from sslab.config import ModelConfig
from sslab.errors import ConfigError

# (hidden, layers, heads, intermediate): BERT's own sizes from base up, Turc et al. 2019 below.
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (128, 2, 2, 512),
    "mini": (256, 4, 4, 1024),
    "small": (512, 4, 8, 2048),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
}

# Peak dense bf16 FLOP/s, for MFU.
PEAK_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}


def encoder_config(cfg: ModelConfig, vocab) -> PretrainedConfig:
    """A ModernBERT, BERT or RoBERTa config of preset size with SDPA attention."""
    hidden, layers, heads, inter = PRESETS[cfg.preset]
    common = dict(vocab_size=vocab.size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  pad_token_id=vocab.pad_id, attn_implementation="sdpa")
    if cfg.arch == "modernbert":
        drop = cfg.dropout or 0.0  # ModernBERT trains without dropout
        # GeGLU has three matrices where BERT's MLP has two: 2/3 of the width keeps the parameters.
        return ModernBertConfig(**common, intermediate_size=inter * 2 // 3, max_position_embeddings=cfg.max_positions,
                                cls_token_id=vocab.cls_id, sep_token_id=vocab.sep_id, bos_token_id=vocab.cls_id,
                                eos_token_id=vocab.sep_id, embedding_dropout=drop, attention_dropout=drop,
                                mlp_dropout=drop)
    drop = 0.1 if cfg.dropout is None else cfg.dropout
    # RoBERTa offsets positions by padding_idx + 1, so it needs that many more position slots.
    positions = cfg.max_positions + (vocab.pad_id + 1 if cfg.arch == "roberta" else 0)
    kind = BertConfig if cfg.arch == "bert" else RobertaConfig
    return kind(**common, intermediate_size=inter, max_position_embeddings=positions,
                hidden_dropout_prob=drop, attention_probs_dropout_prob=drop)


def from_pretrained(auto_cls, cfg: ModelConfig, vocab_size: int) -> torch.nn.Module:
    """Load ``cfg.init_from`` for continued pretraining, checking it fits the tokenizer."""
    path = Path(cfg.init_from)
    try:
        hf_cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.init_from={str(path)!r} holds no Hugging Face model: {e}".splitlines()[0]) from None
    if hf_cfg.vocab_size < vocab_size:
        raise ConfigError(f"model.init_from={str(path)!r} has {hf_cfg.vocab_size} token embeddings but the "
                          f"tokenizer has {vocab_size} tokens; use the model's own tokenizer (tokenizer.path)")
    return auto_cls.from_pretrained(str(path), local_files_only=True, attn_implementation="sdpa")


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12·L·H·Q·T (PaLM, Chowdhery et al. 2022, appendix B).

    N counts every parameter once (shared ones too); the attention term is summed over every
    Hugging Face transformer the module holds, whatever wraps it (an encoder with heads,
    ELECTRA's generator and discriminator, BART's and T5's encoder and decoder)."""
    n = sum(p.numel() for p in model.parameters())
    return 6 * n + 12 * seq_len * sum(attention_width(m.config) for m in transformers_in(model))


def transformers_in(model: torch.nn.Module) -> list[PreTrainedModel]:
    """The outermost Hugging Face models inside ``model`` (a head model, not also its base model)."""
    if isinstance(model, PreTrainedModel):
        return [model]
    return [m for child in model.children() for m in transformers_in(child)]


def attention_width(cfg: PretrainedConfig) -> int:
    """Σ over attention layers of heads × head dim (L·H·Q). A decoder layer of an encoder-decoder
    attends twice, to itself and to the encoder, over about as many positions each."""
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "d_kv", None) or getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    if not cfg.is_encoder_decoder:
        return cfg.num_hidden_layers * heads * head_dim
    encoder = getattr(cfg, "encoder_layers", None) or cfg.num_layers
    decoder = getattr(cfg, "decoder_layers", None) or getattr(cfg, "num_decoder_layers", None) or encoder
    return (encoder + 2 * decoder) * heads * head_dim


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of ``device``, or None when unknown (CPU, unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)
