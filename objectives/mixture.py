"""Mixtures of encoder objectives: BERT's ``mlm+nsp``, ALBERT's ``mlm+sop``, SimCSE's ``simcse+mlm``.

A mixture is named by its parts joined with ``+``. Its config holds each part's own section
(``objective.mlm.mask_ratio``) and a weight per part (``objective.nsp_weight``), so Ray Tune can
search any of them. The part that builds the model input from the unit (nsp, sop, simcse)
transforms first; token-level parts (mlm) then corrupt what it built. All parts read one
shared encoder in a single forward pass, and each part's loss is reported.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

from sslab import segment
from sslab.config import ObjectiveConfig, require
from sslab.errors import ConfigError
from sslab.objectives.base import Objective, get, unwrap
from sslab.rng import RowRandom
from sslab.objectives.encoder import EncoderObjective, build_encoder, keys_of, outputs_for

FAMOUS = {"mlm+nsp": "BERT", "nsp+mlm": "BERT", "mlm+sop": "ALBERT", "sop+mlm": "ALBERT", "simcse+mlm": "SimCSE"}


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def check_mixable(parts: list[type[Objective]]) -> str:
    """The unit the parts share, or a ConfigError naming two that cannot be mixed."""
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            if a is b:
                raise ConfigError(f"objective mixture names {a.name!r} twice")
            if not (issubclass(a, EncoderObjective) and issubclass(b, EncoderObjective)):
                raise ConfigError(f"objectives {a.name!r} and {b.name!r} cannot be mixed: {a.name} trains "
                                  f"{article(a.backbone)} model and {b.name} {article(b.backbone)}; mixtures combine the "
                                  "encoder objectives (mlm, nsp, sop, simcse)")
            if a.builds_input and b.builds_input:
                raise ConfigError(f"objectives {a.name!r} and {b.name!r} cannot be mixed: both build the model "
                                  f"input from their unit ({a.unit}, {b.unit}); mix each with mlm instead")
    unit = next((p.unit for p in parts if p.builds_input), parts[0].unit)
    for p in parts:
        if unit not in (p.unit, *p.units):
            other = next(q for q in parts if q is not p)
            raise ConfigError(f"objectives {other.name!r} and {p.name!r} cannot be mixed: they share no unit "
                              f"({p.name} trains on {'/'.join((p.unit, *p.units))}, the mixture on {unit})")
    return unit


def mixture_config(name: str, parts: list[type[EncoderObjective]]) -> type[ObjectiveConfig]:
    """A kw-only dataclass: ``name``, a section per part, and ``<part>_weight`` per part."""
    fields = [("name", str, dataclasses.field(default=name))]
    for i, p in enumerate(parts):
        fields.append((p.name, p.Config, dataclasses.field(default_factory=p.Config)))
        fields.append((f"{p.name}_weight", float, dataclasses.field(default=1.0 if i == 0 else p.aux_weight)))

    def __post_init__(self):
        weights = {f"objective.{p.name}_weight": getattr(self, f"{p.name}_weight") for p in parts}
        for key, w in weights.items():
            require(w >= 0, key, w, "a number >= 0")
        require(any(weights.values()), next(iter(weights)), 0.0, "at least one part with a positive weight")

    cls_name = "".join(p.__name__ for p in parts) + "Config"
    return dataclasses.make_dataclass(cls_name, fields, bases=(ObjectiveConfig,), kw_only=True,
                                      namespace={"__post_init__": __post_init__,
                                                 "__doc__": f"Knobs of the mixture {name}: each part's and its weight."})


@functools.cache
def compose(name: str) -> type[Objective]:
    """The objective class of the mixture ``name`` (``"mlm+nsp"``), checked for compatibility."""
    parts = [get(p.strip()) for p in name.split("+")]
    unit = check_mixable(parts)
    builders_first = sorted(parts, key=lambda p: not p.builds_input)
    recipe = FAMOUS.get(name)
    attrs = dict(
        name=name, unit=unit, backbone="encoder", masks_words=any(p.masks_words for p in parts),
        eval_unit=next((p.eval_unit for p in parts if p.builds_input), None), parts=tuple(builders_first), Config=mixture_config(name, parts),
        metrics=tuple(dict.fromkeys(m for p in parts for m in p.metrics)),
        baselines={b: m for p in parts for b, m in p.baselines.items()},
        paper=(f"{recipe}'s recipe; " if recipe else "") + "; ".join(p.paper for p in parts),
        __doc__=f"The mixture {name}: " + ", ".join(p.__doc__.splitlines()[0].lower() for p in parts),
    )
    return type("Mixture_" + "_".join(p.name for p in parts), (Mixture,), attrs)


class Mixture(Objective):
    """Base of composed mixtures: weighted sum of the parts' losses on one shared encoder."""

    parts: ClassVar[tuple[type[EncoderObjective], ...]] = ()
    backbone = "encoder"

    def __init__(self, cfg, vocab):
        super().__init__(cfg, vocab)
        self.members = [p(getattr(cfg, p.name), vocab) for p in self.parts]
        self.weights = [getattr(cfg, f"{p.name}_weight") for p in self.parts]

    def _run(self, batch, rng: RowRandom, method: str, *args):
        work, out = dict(batch), {}
        for i, part in enumerate(self.members):
            produced = getattr(part, method)(work, rng.fork(i), *args)  # independent draws per part
            work.update(produced)
            out.update(produced)
        out.pop(segment.COLUMN, None)  # the word marks of the input the builder framed: for the mlm part only
        return out

    def transform(self, batch, rng):
        return self._run(batch, rng, "transform")

    def eval_transform(self, batch, rng, protocol):
        return self._run(batch, rng, "eval_transform", protocol)

    def mask_epoch(self, epoch):
        """A part's repeated masks (``objective.mlm.static_masks``) repeat the whole row's
        corruption, as BERT's static data fixed each copy's NSP pair with its mask."""
        repeated = [e for e in (p.mask_epoch(epoch) for p in self.members) if e != epoch]
        return repeated[0] if repeated else epoch

    def build_model(self, model_cfg):
        dropouts = [p.default_dropout for p in self.members if p.default_dropout is not None]

        def heads(hidden):
            return {k: v for p in self.members for k, v in p.heads(hidden).items()}

        return build_encoder(model_cfg, self.vocab, any(p.lm_head for p in self.members), heads,
                             padded=self.unit != "packed", dropout=max(dropouts) if dropouts else None)

    def loss(self, model, batch):
        encoded = model(batch, keys_of(self.members, training=True))
        net, total, logs = unwrap(model), 0.0, {}
        for part, weight in zip(self.members, self.weights):
            loss, part_logs = part.part_loss(net, outputs_for(part, encoded, training=True), batch)
            total = total + weight * loss
            logs[f"{part.name}_loss"] = loss.detach()
            logs.update(part_logs)
        return total, logs

    def model_tokens(self, batch):
        return sum(batch[k].numel() for k in keys_of(self.members, training=True))

    def eval_sums(self, model, batch):
        encoded = model(batch, keys_of(self.members, training=False))
        net = unwrap(model)
        return {f"{part.name}.{k}": v for part in self.members
                for k, v in part.part_sums(net, outputs_for(part, encoded, training=False), batch).items()}

    def eval_metrics(self, sums):
        metrics = {}
        for part in self.members:
            prefix = f"{part.name}."
            metrics.update(part.eval_metrics({k[len(prefix):]: v for k, v in sums.items() if k.startswith(prefix)}))
        return metrics

    def encoder(self, model):
        return self.members[0].encoder(model)

    def sentence_pooling(self):
        return next((p.sentence_pooling() for p in self.members if p.sentence_pooling()), None)

    def export(self, model, out_dir, seq_len=None):
        # The first part builds the input (simcse's sentences, nsp's pairs), so its pooling is the run's.
        self.members[0].export(model, out_dir, seq_len)
