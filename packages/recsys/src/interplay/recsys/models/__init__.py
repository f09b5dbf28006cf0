"""recsys models, one module per paper model; importing this package registers them.

Hiformer and AW-MoE with the baselines DNN, DCN-v2, AutoInt, DIN and a plain MoE; KGAT follows.
"""

from interplay.recsys.models import awmoe, baselines, din, hiformer, moe  # noqa: F401  (registration)
from interplay.recsys.models.awmoe import AWMoE
from interplay.recsys.models.din import DIN
from interplay.recsys.models.embedding import FeatureEmbedding
from interplay.recsys.models.moe import MoE

__all__ = ["AWMoE", "DIN", "FeatureEmbedding", "MoE"]
