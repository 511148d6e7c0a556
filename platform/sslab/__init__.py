"""sslab: self-supervised language-model pretraining on Ray.

>>> import sslab
>>> cfg = sslab.load_config(overrides=["model.preset=tiny", "train.max_steps=100"])
>>> sslab.prepare(cfg).entry               # doctest: +SKIP
>>> result = sslab.pretrain(cfg)            # doctest: +SKIP
>>> result.summary["eval_mlm_acc"], result.model_dir   # doctest: +SKIP
>>> search = sslab.tune("mlm_masking", out="runs/masking", **{"model.preset": "tiny"})  # doctest: +SKIP
>>> search.table.head(), search.best["model_dir"]   # doctest: +SKIP
"""
from sslab.config import Config
from sslab.config import load as load_config
from sslab.errors import ConfigError, CorpusError, RunError, SslabError


def pretrain(config, **kwargs):
    """Run one pretraining run; see :func:`sslab.runner.pretrain`."""
    from sslab.runner import pretrain as _pretrain

    return _pretrain(config, **kwargs)


def prepare(config=None, **kwargs):
    """Tokenise and pack a corpus once into the data cache; see :func:`sslab.runner.prepare`."""
    from sslab.runner import prepare as _prepare

    return _prepare(config, **kwargs)


def tune(spec, **kwargs):
    """Run a hyperparameter search; see :func:`sslab.search.tune`."""
    from sslab.search import tune as _tune

    return _tune(spec, **kwargs)


__all__ = ["Config", "ConfigError", "CorpusError", "RunError", "SslabError", "load_config", "prepare", "pretrain", "tune"]
__version__ = "0.1.0"
