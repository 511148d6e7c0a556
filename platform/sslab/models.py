"""Model presets, built from ``transformers`` configs (never downloaded), FLOP accounting, and the
torch modules the objectives assemble around ``transformers`` models.

The objectives name this module lazily (:mod:`sslab.lazy`): everything torch needs is here or in
their model-side methods, so the processes that only corrupt data never import torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import (AutoConfig, BertConfig, ElectraForMaskedLM, ElectraForPreTraining, ModernBertConfig,
                          PretrainedConfig, PreTrainedModel, RobertaConfig)

from sslab.config import ModelConfig
from sslab.errors import ConfigError
from sslab.objectives.base import IGNORE

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


# ---------------------------------------------------------------- the encoder objectives' network


@dataclass
class Encoded:
    """What the encoder made of one id array: last hidden states and, with an MLM head, logits."""

    hidden: torch.Tensor
    logits: torch.Tensor | None


class EncoderWithHeads(nn.Module):
    """A Hugging Face encoder (with its MLM head when an objective needs one) plus extra heads."""

    def __init__(self, lm: nn.Module, heads: dict[str, nn.Module], pad_id: int, padded: bool):
        super().__init__()
        self.lm = lm
        self.heads = nn.ModuleDict(heads)
        self.pad_id, self.padded = pad_id, padded
        self._hidden: torch.Tensor | None = None
        # The hook hands over the encoder's own last hidden state, whatever the family calls its
        # MLM head (ModernBERT head+decoder, BERT cls, RoBERTa lm_head).
        lm.base_model.register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module, args, output) -> None:
        self._hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def forward(self, batch: dict[str, torch.Tensor], keys: list[str]) -> dict[str, list[Encoded]]:
        """Encode ``batch[k]`` for every ``k`` in ``keys`` in one pass; a key listed twice is
        encoded twice (two dropout views, as SimCSE wants)."""
        ids = torch.cat([batch[k] for k in keys])
        mask = (ids != self.pad_id).long() if self.padded else None
        out = self.lm(input_ids=ids, attention_mask=mask)
        logits = getattr(out, "logits", None)
        hidden, self._hidden = self._hidden, None
        result: dict[str, list[Encoded]] = {}
        start = 0
        for k in keys:
            rows = slice(start, start + len(batch[k]))
            result.setdefault(k, []).append(Encoded(hidden[rows], None if logits is None else logits[rows]))
            start = rows.stop
        return result


# ---------------------------------------------------------------- ELECTRA's generator and discriminator


def replace_with_samples(logits: torch.Tensor, original: torch.Tensor, selected: torch.Tensor,
                         temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and its labels: ``original`` with the ``selected`` positions
    replaced by draws from ``softmax(logits / temperature)`` (one row of logits per selected
    position). A draw equal to the original token counts as original, as in the paper.

    No gradient flows through the sampling: the generator learns from its MLM loss only.
    The draws use torch's global RNG, which the train loop reseeds every step.
    """
    with torch.no_grad():
        probs = torch.softmax(logits.detach().float() / temperature, dim=-1)
        fake = original.clone()
        if probs.shape[0]:
            fake[selected] = torch.multinomial(probs, 1).squeeze(-1)
        return fake, fake != original


class ElectraPair(torch.nn.Module):
    """Generator and discriminator as one module, so that one forward (DDP's unit) trains both."""

    def __init__(self, generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining,
                 disc_weight: float, temperature: float):
        super().__init__()
        if generator.config.embedding_size != discriminator.config.embedding_size \
                or generator.config.vocab_size != discriminator.config.vocab_size:
            raise ConfigError("the ELECTRA generator's embeddings do not fit the discriminator's: "
                              f"{generator.config.vocab_size}x{generator.config.embedding_size} vs "
                              f"{discriminator.config.vocab_size}x{discriminator.config.embedding_size}")
        # Share token, position and type embeddings (section 3.2); the generator's output layer
        # stays tied to the shared token embeddings.
        generator.electra.embeddings = discriminator.electra.embeddings
        generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
        self.generator, self.discriminator = generator, discriminator
        self.disc_weight, self.temperature = disc_weight, temperature
        self.config = discriminator.config  # its pad id scores the discriminator

    def generator_logits(self, input_ids: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """The generator's vocabulary logits at the ``selected`` positions only (rows, vocab):
        the output layer is the widest matrix, and only masked positions are scored."""
        g = self.generator
        hidden = g.electra(input_ids=input_ids).last_hidden_state[selected]
        return g.generator_lm_head(g.generator_predictions(hidden))

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, original: torch.Tensor) -> dict:
        """Generator MLM loss, sampled replacements, discriminator RTD loss; the total and parts."""
        selected = labels != IGNORE
        logits = self.generator_logits(input_ids, selected).float()
        targets = labels[selected]
        gen_loss = F.cross_entropy(logits, targets, reduction="sum") / selected.sum().clamp(min=1)
        fake, replaced = replace_with_samples(logits, original, selected, self.temperature)
        disc_logits = self.discriminator(input_ids=fake).logits.float()
        # ELECTRA scores every real token, [CLS] and [SEP] included; packed blocks have no padding.
        scored = original != self.config.pad_token_id
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[scored], replaced[scored].float())
        with torch.no_grad():
            gen_acc = (logits.argmax(-1) == targets).float().mean() if targets.numel() else logits.new_zeros(())
            disc_acc = ((disc_logits[scored] > 0) == replaced[scored]).float().mean()
        return {"loss": gen_loss + self.disc_weight * disc_loss, "gen_loss": gen_loss, "disc_loss": disc_loss,
                "gen_acc": gen_acc, "disc_acc": disc_acc}


# ---------------------------------------------------------------- SimCSE's global negatives


class GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward sums every worker's gradient and keeps this worker's slice.

    Each worker's loss uses every worker's rows as negatives, so a row's gradient has parts
    from every worker's loss; summing them here, then DDP's mean over workers, gives exactly
    the gradient of the mean loss over the global batch (SimCLR's GatherLayer does the same).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]
