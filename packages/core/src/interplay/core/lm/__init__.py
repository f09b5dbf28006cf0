"""A small byte-level causal language model whose token mixer is chosen by name (issue 12, point 8).

    from interplay.core.lm import LMConfig, train_lm
    result = train_lm(LMConfig(mixer="rat", steps=300))
    result.metrics["val_bpc"]

Mixers (:mod:`~interplay.core.lm.mixers`): softmax, window (sliding window + sinks), linear, nala,
moba, rat, mla, cmha, chunked (TCNCA), the content-independent shift and fixed, and hybrids such as
``hybrid:linear@softmax=0,3``. Text: the Python standard library's sources (:mod:`~interplay.core.lm.data`).
Command line: ``interplay lm train --mixer rat --steps 300 --seq-len 256``.
"""

from interplay.core.lm.data import Corpus, RandomWindows, eval_windows, stdlib_corpus, stdlib_root
from interplay.core.lm.mixers import (
    MIXERS,
    MixerOptions,
    chunked_attention,
    chunked_attention_reference,
    dilated_causal_conv,
    dilated_causal_conv_reference,
    fixed_causal_mixing,
    fixed_causal_mixing_reference,
    layer_mixers,
    make_mixer,
    mixer_names,
)
from interplay.core.lm.model import CausalLM, ModelSpec, build_model, parameter_table
from interplay.core.lm.train import DataSpec, LMConfig, LMResult, LMTask, load_model, train_lm

__all__ = [
    "MIXERS",
    "CausalLM",
    "Corpus",
    "DataSpec",
    "LMConfig",
    "LMResult",
    "LMTask",
    "MixerOptions",
    "ModelSpec",
    "RandomWindows",
    "build_model",
    "chunked_attention",
    "chunked_attention_reference",
    "dilated_causal_conv",
    "dilated_causal_conv_reference",
    "eval_windows",
    "fixed_causal_mixing",
    "fixed_causal_mixing_reference",
    "layer_mixers",
    "load_model",
    "make_mixer",
    "mixer_names",
    "parameter_table",
    "stdlib_corpus",
    "stdlib_root",
    "train_lm",
]
