"""sslab: self-supervised language-model pretraining on Ray.

>>> import sslab
>>> cfg = sslab.resolve(overrides=["model.preset=tiny", "train.max_steps=100"])
>>> data = sslab.prepare(cfg)               # doctest: +SKIP
>>> data.entry.uri, data.splits["train"]["rows"]   # doctest: +SKIP
>>> result = sslab.train(data)              # doctest: +SKIP
>>> result = sslab.pretrain(cfg)            # the same three stages in one call   # doctest: +SKIP
>>> result.summary["eval_mlm_acc"], result.model_dir   # doctest: +SKIP
>>> rows = sslab.preview("mlm", corpus="data/books/", n=3)   # what masking does to your text   # doctest: +SKIP
>>> search = sslab.tune("mlm_masking", out="runs/masking", **{"model.preset": "tiny"})  # doctest: +SKIP
>>> search.table.head(), search.best["model_dir"]   # doctest: +SKIP
>>> print(sslab.study("dynamic_masking"))   # a published ablation beside sslab's numbers   # doctest: +SKIP
"""
from sslab.config import Config
from sslab.config import load as load_config
from sslab.errors import ConfigError, CorpusError, DirectoryInUse, RunError, SslabError


def resolve(config=None, overrides=None):
    """A validated :class:`Config` from a Config, dict or YAML path plus ``key=value`` overrides;
    see :func:`sslab.runner.resolve`."""
    from sslab.runner import resolve as _resolve

    return _resolve(config, overrides)


def pretrain(config, **kwargs):
    """Run one pretraining run; see :func:`sslab.runner.pretrain`."""
    from sslab.runner import pretrain as _pretrain

    return _pretrain(config, **kwargs)


def prepare(config=None, **kwargs):
    """Tokenise and pack a corpus once into the data cache: a :class:`~sslab.runner.Prepared`;
    see :func:`sslab.runner.prepare`."""
    from sslab.runner import prepare as _prepare

    return _prepare(config, **kwargs)


def train(data, **kwargs):
    """Train on a corpus :func:`prepare` returned; see :func:`sslab.runner.train`."""
    from sslab.runner import train as _train

    return _train(data, **kwargs)


def preview(objective_or_config=None, **kwargs):
    """The first rows of a corpus tokenised and corrupted as training reads them, without Ray;
    see :func:`sslab.previews.preview`."""
    from sslab.previews import preview as _preview

    return _preview(objective_or_config, **kwargs)


def tune(spec, **kwargs):
    """Run a hyperparameter search; see :func:`sslab.search.tune`."""
    from sslab.search import tune as _tune

    return _tune(spec, **kwargs)


def study(name, **kwargs):
    """Reproduce a published ablation and compare it with the paper; see :func:`sslab.study.study`."""
    from sslab.study import study as _study

    return _study(name, **kwargs)


__all__ = ["Config", "ConfigError", "CorpusError", "DirectoryInUse", "RunError", "SslabError", "load_config", "prepare",
           "pretrain", "preview", "resolve", "study", "train", "tune"]
__version__ = "0.1.0"
