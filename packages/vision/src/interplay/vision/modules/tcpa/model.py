"""TCPA: Token Coordinated Prompt Attention (Liu, Zou, Hua and Zhou, "Token Coordinated Prompt
Attention is Needed for Visual Prompting", ICML 2025) on a frozen plain ViT of the registry.

Per block ``j`` two prompt pools, each of ``M`` prompts of ``L_p`` tokens with one key per prompt:

- the **CLS pool** ``(K_c^j in R^{M x D}, P_c^j in R^{M x L_p x D})``: the class token ``c^j`` (the
  block's input) picks the ``k`` prompts whose keys have the largest cosine similarity with it;
- the **image pool** ``(K_i^j, P_i^j)``: *every* patch token ``h_n^j`` picks its own top-``k``.

All ``2 M L_p`` prompt tokens are appended after the patch tokens (the ViT's prompt layout) and the
block runs with a boolean attention mask (``True`` = may attend) so that

    CLS   row: [CLS, patches] + the CLS prompts it matched      (no image prompt)
    patch row: [CLS, patches] + the image prompts *it* matched  (no CLS prompt)

(the paper's R-TCPA, role-level, and T-TCPA, token-level, coordination, its eq. 5-9). The prompts'
own outputs are dropped after every block (VPT-deep), so only the keys/values of the prompts act;
their query rows attend everything to stay well defined. Blocks run through the ViT's
``Block(x, attn_mask)``, i.e. :func:`interplay.core.attention.attend` with the dense mask;
:meth:`TCPAViT.get_attention_maps` returns the exact probabilities the mask leaves.

Matching loss (the paper's eq. 10): ``mean(1 - cos(query, key))`` over the selected keys, for the CLS
and the image pool, summed over blocks; the task weighs it (10 in the official README). The queries
are detached by default, so the loss pulls the matched *keys* towards the tokens and does not bend
the token features (the official code lets it reach earlier prompts through the tokens as well:
``detach_queries=False``). During the first epochs the official code picks prompts at random
(``random_matching``) so that every prompt receives gradients before matching locks in.

Only the pools and the classifier are trained: the backbone is frozen and kept in eval mode (no
dropout / drop-path in the frozen part). The parameters TCPA adds are
``2 pools x depth x M x (L_p + 1) x D`` (prompts plus keys; :func:`tcpa_added_parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.vision.models.vit import VisionTransformer

PAPER = "Liu, Zou, Hua and Zhou, Token Coordinated Prompt Attention is Needed for Visual Prompting, ICML 2025"


def tcpa_added_parameters(depth: int, pool_size: int, prompt_length: int, width: int) -> int:
    """Parameters TCPA adds to a ViT: ``2 x depth x pool_size x (prompt_length + 1) x width``
    (a CLS and an image pool per block; each prompt has ``prompt_length`` tokens and one key)."""
    return 2 * depth * pool_size * (prompt_length + 1) * width


def cosine_topk(queries: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` keys most cosine-similar to each query.

    Args:
        queries: ``[..., D]``; keys: ``[M, D]``.
    Returns:
        ``(indices [..., k], similarities [..., k])``, most similar first.
    """
    if not 1 <= k <= keys.shape[0]:
        raise ConfigError(f"top_k must be in [1, pool size {keys.shape[0]}], got {k}")
    sim = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).transpose(0, 1)
    values, indices = sim.topk(k, dim=-1)
    return indices, values


def random_topk(shape: tuple[int, ...], pool_size: int, k: int, device: torch.device) -> Tensor:
    """``k`` distinct random prompt indices per position ``[*shape, k]`` (warm-up matching)."""
    return torch.rand(*shape, pool_size, device=device).argsort(dim=-1)[..., :k]


class PromptPool(nn.Module):
    """``depth`` pools of ``pool_size`` prompts (``prompt_length`` tokens each) with one key per prompt.

    ``keys [depth, M, D]``, ``prompts [depth, M, L_p, D]``, both drawn from ``U(-1, 1)`` as in the
    official code.
    """

    def __init__(self, depth: int, pool_size: int, prompt_length: int, dim: int, top_k: int) -> None:
        super().__init__()
        for name, value in (("pool_size", pool_size), ("prompt_length", prompt_length), ("top_k", top_k)):
            if value < 1:
                raise ConfigError(f"TCPA {name} must be >= 1, got {value}")
        if top_k > pool_size:
            raise ConfigError(f"TCPA top_k ({top_k}) cannot exceed pool_size ({pool_size})")
        self.pool_size, self.prompt_length, self.top_k = pool_size, prompt_length, top_k
        self.keys = nn.Parameter(torch.empty(depth, pool_size, dim).uniform_(-1.0, 1.0))
        self.prompts = nn.Parameter(torch.empty(depth, pool_size, prompt_length, dim).uniform_(-1.0, 1.0))

    @property
    def num_tokens(self) -> int:
        """Prompt tokens one block carries: ``pool_size x prompt_length``."""
        return self.pool_size * self.prompt_length

    def tokens(self, layer: int) -> Tensor:
        """Block ``layer``'s prompt tokens ``[M L_p, D]`` (prompt ``m`` occupies rows ``m L_p ...``)."""
        return self.prompts[layer].reshape(-1, self.prompts.shape[-1])

    def match(
        self, queries: Tensor, layer: int, *, random: bool = False, detach_queries: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` prompts for each query ``[..., D]``: ``(indices [..., k], loss)`` where ``loss`` is
        ``mean(1 - cos)`` over the chosen (query, key) pairs."""
        keys = self.keys[layer]
        q = queries.detach() if detach_queries else queries
        if random:
            indices = random_topk(tuple(q.shape[:-1]), self.pool_size, self.top_k, q.device)
            sim = F.normalize(q, dim=-1) @ F.normalize(keys, dim=-1).transpose(0, 1)
            chosen = sim.gather(-1, indices)
        else:
            indices, chosen = cosine_topk(q, keys, self.top_k)
        return indices, (1.0 - chosen).mean()


def selection_mask(indices: Tensor, pool_size: int, prompt_length: int) -> Tensor:
    """One-hot of the chosen prompts spread over their tokens: ``[..., k] -> bool [..., M L_p]``."""
    chosen = torch.zeros(*indices.shape[:-1], pool_size, dtype=torch.bool, device=indices.device)
    chosen.scatter_(-1, indices, True)
    return chosen.repeat_interleave(prompt_length, dim=-1)


def tcpa_attention_mask(
    cls_indices: Tensor,
    image_indices: Tensor,
    *,
    cls_pool: tuple[int, int],
    image_pool: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> Tensor:
    """The TCPA mask ``bool [B, 1, T, T]`` for tokens laid out ``[CLS, patches, CLS prompts, image prompts]``.

    Args:
        cls_indices: ``[B, k_c]`` CLS prompts the class token matched.
        image_indices: ``[B, N, k_i]`` image prompts each patch token matched.
        cls_pool, image_pool: ``(pool_size, prompt_length)`` of the two pools.
    Rows of the class token and the patches see every class / patch token, plus only their own
    prompts of their own pool; prompt rows (outputs dropped) see everything.
    """
    b, n = image_indices.shape[:2]
    base = num_prefix_tokens + n
    n_cls, n_img = cls_pool[0] * cls_pool[1], image_pool[0] * image_pool[1]
    total = base + n_cls + n_img
    mask = torch.ones(b, total, total, dtype=torch.bool, device=image_indices.device)
    cls_cols = slice(base, base + n_cls)
    img_cols = slice(base + n_cls, total)
    mask[:, :num_prefix_tokens, cls_cols] = selection_mask(cls_indices, *cls_pool).unsqueeze(1)
    mask[:, :num_prefix_tokens, img_cols] = False
    mask[:, num_prefix_tokens:base, cls_cols] = False
    mask[:, num_prefix_tokens:base, img_cols] = selection_mask(image_indices, *image_pool)
    return mask.unsqueeze(1)


@dataclass
class TCPABlockTrace:
    """What one block did: the prompts each token matched, the mask, the exact attention map."""

    cls_indices: Tensor  # [B, k_c]
    image_indices: Tensor  # [B, N, k_i]
    mask: Tensor  # [B, 1, T, T]
    attention: Tensor | None = None  # [B, heads, T, T]


class TCPAViT(nn.Module):
    """A frozen :class:`~interplay.vision.models.vit.VisionTransformer` with TCPA prompt pools.

    Args:
        backbone: the ViT (its classifier becomes the trained head; reset it to the task's classes first).
        pool_size, prompt_length, top_k: the image pool; ``cls_*`` default to the same values.
        prompt_dropout: dropout on the prompt tokens (0.1 in the official code).
        use_prompts: ``False`` gives the linear probe of the same frozen backbone (baseline).
        freeze_backbone: train only pools and head (TCPA's setting).
        detach_queries: the matching loss moves the keys only (see the module docstring).

    ``forward(x)`` returns logits and leaves the matching loss of that pass in ``self.matching_loss``
    (a scalar tensor; zero without prompts); set ``random_matching = True`` for warm-up epochs.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        *,
        pool_size: int = 18,
        prompt_length: int = 1,
        top_k: int = 10,
        cls_pool_size: int | None = None,
        cls_prompt_length: int | None = None,
        cls_top_k: int | None = None,
        prompt_dropout: float = 0.0,
        use_prompts: bool = True,
        freeze_backbone: bool = True,
        detach_queries: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, VisionTransformer):
            raise ConfigError(
                f"TCPA needs a plain ViT backbone (VisionTransformer), got {type(backbone).__name__}"
            )
        self.backbone = backbone
        self.num_classes = backbone.num_classes
        self.num_features = backbone.num_features
        self.use_prompts = use_prompts
        self.freeze_backbone = freeze_backbone
        self.detach_queries = detach_queries
        self.random_matching = False
        depth, dim = len(backbone.blocks), backbone.embed_dim
        if use_prompts:
            self.cls_pool = PromptPool(
                depth,
                cls_pool_size or pool_size,
                cls_prompt_length or prompt_length,
                dim,
                cls_top_k or top_k,
            )
            self.image_pool = PromptPool(depth, pool_size, prompt_length, dim, top_k)
        self.prompt_dropout = nn.Dropout(prompt_dropout)
        self.matching_loss = torch.zeros(())
        if freeze_backbone:
            for name, p in backbone.named_parameters():
                p.requires_grad_(name.startswith("head."))
            self.train(self.training)

    # -- bookkeeping --------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> TCPAViT:
        super().train(mode)
        if self.freeze_backbone:
            # the frozen part keeps its inference behaviour (no dropout / drop-path); the head trains
            self.backbone.train(False)
            self.backbone.head.train(mode)
        return self

    def added_parameters(self) -> int:
        """Parameters of the prompt pools (prompts and keys)."""
        if not self.use_prompts:
            return 0
        return sum(p.numel() for p in (*self.cls_pool.parameters(), *self.image_pool.parameters()))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.backbone.reset_classifier(num_classes)
        if self.freeze_backbone:
            self.backbone.head.requires_grad_(True)

    # -- forward ------------------------------------------------------------------------------------
    def _run(self, x: Tensor, *, trace: bool = False) -> tuple[Tensor, Tensor, list[TCPABlockTrace]]:
        vit = self.backbone
        z = vit.prepare_tokens(x)
        base = z.shape[1]
        loss = z.new_zeros(())
        traces: list[TCPABlockTrace] = []
        random = self.random_matching and self.training
        for i, block in enumerate(vit.blocks):
            if not self.use_prompts:
                if trace:
                    z, probs = block(z, None, True)
                    traces.append(TCPABlockTrace(z.new_zeros(0), z.new_zeros(0), z.new_ones(0), probs))
                else:
                    z = block(z)
                continue
            prefix = vit.num_prefix_tokens
            cls_idx, cls_loss = self.cls_pool.match(
                z[:, 0], i, random=random, detach_queries=self.detach_queries
            )
            img_idx, img_loss = self.image_pool.match(
                z[:, prefix:], i, random=random, detach_queries=self.detach_queries
            )
            loss = loss + cls_loss + img_loss
            prompts = torch.cat([self.cls_pool.tokens(i), self.image_pool.tokens(i)], dim=0)
            prompts = self.prompt_dropout(prompts.unsqueeze(0).expand(z.shape[0], -1, -1))
            mask = tcpa_attention_mask(
                cls_idx,
                img_idx,
                cls_pool=(self.cls_pool.pool_size, self.cls_pool.prompt_length),
                image_pool=(self.image_pool.pool_size, self.image_pool.prompt_length),
                num_prefix_tokens=prefix,
            )
            tokens = torch.cat([z, prompts], dim=1)
            if trace:
                out, probs = block(tokens, mask, True)
                traces.append(TCPABlockTrace(cls_idx, img_idx, mask, probs))
            else:
                out = block(tokens, mask)
            z = out[:, :base]  # prompt outputs are dropped (VPT-deep)
        return vit.norm(z), loss, traces

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised tokens ``[B, 1 + N, C]`` (prompts dropped); sets ``matching_loss``."""
        z, loss, _ = self._run(x)
        self.matching_loss = loss
        return z

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def get_attention_maps(self, x: Tensor) -> list[TCPABlockTrace]:
        """Per block: matched prompts, mask and the exact attention probabilities ``[B, heads, T, T]``
        (float32, computed with the mask; call ``eval()`` first for deterministic matching)."""
        _, _, traces = self._run(x, trace=True)
        return traces
