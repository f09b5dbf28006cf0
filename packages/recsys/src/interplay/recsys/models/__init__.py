"""recsys models, one module per paper model; importing this package registers them.

Hiformer and AW-MoE with the baselines DNN, DCN-v2, AutoInt, DIN and a plain MoE; KGAT with the
baselines BPR-MF, CKE and LightGCN.
"""

from interplay.recsys.models import awmoe, baselines, din, hiformer, kg_baselines, kgat, moe  # noqa: F401
from interplay.recsys.models.awmoe import AWMoE
from interplay.recsys.models.din import DIN
from interplay.recsys.models.embedding import FeatureEmbedding
from interplay.recsys.models.kg_baselines import BPRMF, CKE, LightGCN
from interplay.recsys.models.kgat import KGAT
from interplay.recsys.models.moe import MoE

__all__ = ["AWMoE", "BPRMF", "CKE", "DIN", "KGAT", "FeatureEmbedding", "LightGCN", "MoE"]
