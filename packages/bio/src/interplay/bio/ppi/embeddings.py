"""Per-residue protein language model embeddings: providers, an on-disk store, a random PLM.

Alsamkary et al. (arXiv:2505.20036, 2025) put their heads on per-residue features of frozen PLMs
(ProtT5, ESM-2, Ankh, ESM3) or fine-tune the PLM. Here a PLM is an :class:`EmbeddingProvider`:

* ``embed(sequences) -> [L_i, D]`` per chain (residues only, no special tokens);
* ``embed_joint(pairs) -> [L, D]`` per complex for the sequence-concatenation (SC) architecture:
  ONE pass over ``ligand_1 SEP ligand_2 SEP receptor_1 SEP receptor_2`` (the separator is ESM's
  ``<eos>``, as in the paper's ESM preprocessing), returning every position but the leading
  ``<cls>`` and the final ``<eos>``, so ``L = sum(len(chain)) + n_chains - 1``.

Implementations:

* :class:`RandomPLMProvider`: a deterministic tiny transformer over amino-acid tokens with fixed
  random weights (seeded; default width 32, 2 pre-norm layers, 4 heads, sinusoidal positions). It
  knows nothing about proteins but gives contextual per-residue features for tests, demos and the
  synthetic benchmark, and its ``module`` can be fine-tuned.
* :class:`ESM2Provider`: ESM-2 through ``fair-esm`` or ``transformers`` from LOCAL weights only;
  nothing is ever downloaded. Missing library or weights raise a ConfigError saying what to install
  and where to put the files.
* :class:`EmbeddingStore`: wraps a provider with a cache keyed by
  ``sha256(provider.name + sequence)``: an LRU in memory and, with ``cache_dir``, one fp16 file per
  chain (``<cache_dir>/<provider>/<key[:2]>/<key>.pt``) written atomically. A hit returns exactly
  what the miss returned (values are rounded to fp16 either way); an unreadable or mis-shaped file
  is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from interplay.bio.ppi.data import ALPHABET
from interplay.core.data import atomic_save, data_root
from interplay.core.errors import ConfigError, UnknownNameError
from interplay.core.nn import TransformerBlock

__all__ = [
    "ESM2Provider",
    "EmbeddingProvider",
    "EmbeddingStore",
    "RandomPLMProvider",
    "RandomProteinLM",
    "create_provider",
    "joint_length",
]

ChainPair = tuple[Sequence[str], Sequence[str]]


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A protein language model seen as a function from chains to per-residue features."""

    name: str  # identifies model AND weights: part of every cache key
    dim: int

    def embed(self, sequences: list[str]) -> list[Tensor]:
        """One ``[len(s), dim]`` float tensor per sequence (residues only)."""
        ...

    def embed_joint(self, pairs: list[ChainPair]) -> list[Tensor]:
        """One ``[joint_length(l, r), dim]`` tensor per (ligand chains, receptor chains) pair."""
        ...


def joint_length(ligand: Sequence[str], receptor: Sequence[str]) -> int:
    """Positions of a joint (SC) embedding: all residues plus one separator between chains."""
    chains = [*ligand, *receptor]
    return sum(len(c) for c in chains) + len(chains) - 1


# ------------------------------------------------------------------------------- random PLM
class RandomProteinLM(nn.Module):
    """A tiny transformer over amino-acid tokens whose weights are drawn from ``seed``.

    Tokens: 0 padding, 1 ``<cls>``, 2 separator (``<eos>``), then :data:`ALPHABET`. Construction
    draws from a private RNG stream (the global RNG state is restored), so the same seed gives the
    same model whatever else the process did.
    """

    PAD, CLS, SEP = 0, 1, 2

    def __init__(self, dim: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> None:
        super().__init__()
        if dim % heads or dim % 2:
            raise ConfigError(f"random PLM: dim ({dim}) must be even and divisible by heads ({heads})")
        self.dim, self.seed = dim, seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.token_embedding = nn.Embedding(3 + len(ALPHABET), dim, padding_idx=self.PAD)
            self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio=2.0) for _ in range(layers))
            self.norm = nn.LayerNorm(dim)
        self._index = {letter: i + 3 for i, letter in enumerate(ALPHABET)}

    def tokens(self, sequence: str) -> list[int]:
        try:
            return [self._index[c] for c in sequence]
        except KeyError as err:
            raise ConfigError(
                f"random PLM: residue {err.args[0]!r} is not in the alphabet {ALPHABET}"
            ) from None

    def positions(self, length: int, device: torch.device) -> Tensor:
        """Sinusoidal position codes ``[length, dim]`` (Vaswani et al., 2017, section 3.5)."""
        position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
        frequency = torch.exp(
            torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.dim)
        )
        codes = torch.zeros(length, self.dim, device=device)
        codes[:, 0::2] = torch.sin(position * frequency)
        codes[:, 1::2] = torch.cos(position * frequency)
        return codes

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """``tokens`` ``[N, L]`` (long), ``mask`` ``[N, L]`` (True = real token) -> ``[N, L, dim]``."""
        x = self.token_embedding(tokens) + self.positions(tokens.shape[1], tokens.device)
        for block in self.blocks:
            x = block(x, key_padding_mask=mask)
        return self.norm(x)


def _batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length, each group under ``max_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > max_tokens:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


class RandomPLMProvider:
    """:class:`EmbeddingProvider` of a :class:`RandomProteinLM` (frozen unless a model fine-tunes
    ``module``: the provider runs it with whatever grad mode the caller has)."""

    def __init__(
        self, dim: int = 32, layers: int = 2, heads: int = 4, seed: int = 0, max_tokens: int = 16384
    ) -> None:
        self.module = RandomProteinLM(dim, layers, heads, seed)
        self.module.requires_grad_(False)
        self.module.eval()
        self.dim = dim
        self.max_tokens = max_tokens
        self.name = f"random-plm-d{dim}-l{layers}-h{heads}-s{seed}"

    def _run(self, token_lists: list[list[int]]) -> list[Tensor]:
        device = next(self.module.parameters()).device
        out: list[Tensor | None] = [None] * len(token_lists)
        for group in _batches([len(t) for t in token_lists], self.max_tokens):
            width = max(len(token_lists[i]) for i in group)
            tokens = torch.zeros(len(group), width, dtype=torch.long, device=device)
            for row, i in enumerate(group):
                tokens[row, : len(token_lists[i])] = torch.tensor(token_lists[i], device=device)
            hidden = self.module(tokens, tokens != RandomProteinLM.PAD)
            for row, i in enumerate(group):
                out[i] = hidden[row, : len(token_lists[i])]
        return out  # type: ignore[return-value]

    def embed(self, sequences: list[str]) -> list[Tensor]:
        lm = self.module
        hidden = self._run([[lm.CLS, *lm.tokens(s), lm.SEP] for s in sequences])
        return [h[1:-1] for h in hidden]

    def embed_joint(self, pairs: list[ChainPair]) -> list[Tensor]:
        lm = self.module
        token_lists = []
        for ligand, receptor in pairs:
            tokens = [lm.CLS]
            for chain in [*ligand, *receptor]:
                tokens += [*lm.tokens(chain), lm.SEP]
            token_lists.append(tokens)
        return [h[1:-1] for h in self._run(token_lists)]


# ------------------------------------------------------------------------------------ ESM-2
ESM2_DIMS = {
    "esm2_t6_8M_UR50D": 320,
    "esm2_t12_35M_UR50D": 480,
    "esm2_t30_150M_UR50D": 640,
    "esm2_t33_650M_UR50D": 1280,
    "esm2_t36_3B_UR50D": 2560,
}


class ESM2Provider:
    """ESM-2 (Lin et al., Science 2023) per-residue embeddings from local weights, never a download.

    ``weights`` (default ``$INTERPLAY_DATA/bio/esm/<model>`` + ``.pt`` or a directory) is either

    * a fair-esm checkpoint ``<model>.pt`` (with ``<model>-contact-regression.pt`` beside it), read
      with ``esm.pretrained.load_model_and_alphabet_local`` (``pip install fair-esm``), or
    * a directory holding the Hugging Face snapshot of ``facebook/<model>`` (``config.json``,
      weights, tokenizer files), read with ``transformers`` (``pip install transformers``) and
      ``local_files_only=True``.

    Features are the last layer's, residues only. ``module`` is the network, for fine-tuning.
    """

    def __init__(
        self,
        model: str = "esm2_t33_650M_UR50D",
        weights: str | None = None,
        device: str = "cpu",
        max_tokens: int = 8192,
    ) -> None:
        if model not in ESM2_DIMS:
            raise UnknownNameError(f"unknown ESM-2 model {model!r} (known: {', '.join(ESM2_DIMS)})")
        self.model_name, self.dim, self.max_tokens = model, ESM2_DIMS[model], max_tokens
        base = Path(weights).expanduser() if weights else data_root() / "bio" / "esm" / model
        candidates = [base] if weights else [base.with_name(model + ".pt"), base]
        have_esm = importlib.util.find_spec("esm") is not None
        have_hf = importlib.util.find_spec("transformers") is not None
        found = next((c for c in candidates if c.exists()), None)
        if found is not None and found.is_file() and have_esm:
            self._load_fair_esm(found)
        elif found is not None and found.is_dir() and have_hf:
            self._load_transformers(found)
        else:
            tried = " or ".join(str(c) for c in candidates)
            libs = {True: "installed", False: "not installed"}
            raise ConfigError(
                f"ESM-2 provider unavailable (fair-esm {libs[have_esm]}, transformers {libs[have_hf]}; "
                f"weights looked for at {tried}: {'found' if found else 'missing'}). Nothing is downloaded: "
                f"either `pip install fair-esm` and put {model}.pt and {model}-contact-regression.pt "
                f"(from https://dl.fbaipublicfiles.com/fair-esm/models/) at that path, or `pip install "
                f"transformers` and put the Hugging Face snapshot of facebook/{model} in a directory "
                "there; or pass plm_params.weights=PATH"
            )
        self.module.requires_grad_(False)
        self.module.eval()
        self.module.to(device)
        self.name = f"esm2-{model}-{self._weights_tag(found)}"

    @staticmethod
    def _weights_tag(path: Path) -> str:
        # the cache key must change when the weights do: size and mtime of the weight files
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        stamp = "|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files)
        return hashlib.sha256(stamp.encode()).hexdigest()[:12]

    def _load_fair_esm(self, path: Path) -> None:
        import esm  # noqa: PLC0415  (optional dependency)

        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(path))
        self.module, self.backend = model, "fair-esm"
        self._cls, self._eos, self._pad = alphabet.cls_idx, alphabet.eos_idx, alphabet.padding_idx
        self._index = {c: alphabet.get_idx(c) for c in ALPHABET}
        self._layer = model.num_layers

    def _load_transformers(self, path: Path) -> None:
        from transformers import AutoTokenizer, EsmModel  # noqa: PLC0415  (optional dependency)

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.module = EsmModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
        self.backend = "transformers"
        self._cls, self._eos, self._pad = (
            tokenizer.cls_token_id,
            tokenizer.eos_token_id,
            tokenizer.pad_token_id,
        )
        self._index = {c: tokenizer.convert_tokens_to_ids(c) for c in ALPHABET}

    def _hidden(self, tokens: Tensor) -> Tensor:
        if self.backend == "fair-esm":
            return self.module(tokens, repr_layers=[self._layer])["representations"][self._layer]
        return self.module(input_ids=tokens, attention_mask=(tokens != self._pad).long()).last_hidden_state

    def _run(self, token_lists: list[list[int]]) -> list[Tensor]:
        device = next(self.module.parameters()).device
        out: list[Tensor | None] = [None] * len(token_lists)
        for group in _batches([len(t) for t in token_lists], self.max_tokens):
            width = max(len(token_lists[i]) for i in group)
            tokens = torch.full((len(group), width), self._pad, dtype=torch.long, device=device)
            for row, i in enumerate(group):
                tokens[row, : len(token_lists[i])] = torch.tensor(token_lists[i], device=device)
            hidden = self._hidden(tokens)
            for row, i in enumerate(group):
                out[i] = hidden[row, 1 : len(token_lists[i]) - 1]
        return out  # type: ignore[return-value]

    def embed(self, sequences: list[str]) -> list[Tensor]:
        return self._run([[self._cls, *(self._index[c] for c in s), self._eos] for s in sequences])

    def embed_joint(self, pairs: list[ChainPair]) -> list[Tensor]:
        token_lists = []
        for ligand, receptor in pairs:
            tokens = [self._cls]
            for chain in [*ligand, *receptor]:
                tokens += [*(self._index[c] for c in chain), self._eos]
            token_lists.append(tokens)
        return self._run(token_lists)


def create_provider(plm: str, params: dict[str, Any] | None = None) -> EmbeddingProvider:
    """``random`` -> :class:`RandomPLMProvider`, ``esm2`` -> :class:`ESM2Provider` (``params`` as kwargs)."""
    from interplay.core.registry import check_kwargs

    kinds = {"random": RandomPLMProvider, "esm2": ESM2Provider}
    if plm not in kinds:
        raise UnknownNameError(f"unknown protein language model {plm!r} (known: {', '.join(kinds)})")
    params = dict(params or {})
    check_kwargs(kinds[plm], params, what=f"protein language model '{plm}'")
    return kinds[plm](**params)


# ------------------------------------------------------------------------------------- store
def _slug(name: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class EmbeddingStore:
    """A provider behind a memory LRU and an optional on-disk fp16 cache (see the module docstring).

    ``stats`` counts memory hits, disk hits, computed embeddings and corrupt files replaced.
    Embeddings are computed without gradients: the store serves frozen features.
    """

    def __init__(
        self, provider: EmbeddingProvider, cache_dir: str | Path | None = None, memory_mb: float = 1024.0
    ) -> None:
        self.provider = provider
        self.name, self.dim = provider.name, provider.dim
        self.directory = Path(cache_dir).expanduser() / _slug(provider.name) if cache_dir else None
        self.memory_bytes = int(memory_mb * 2**20)
        self._memory: OrderedDict[str, Tensor] = OrderedDict()
        self._used = 0
        self.stats = {"memory": 0, "disk": 0, "computed": 0, "corrupt": 0}

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.name}\n{text}".encode()).hexdigest()

    def path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.pt"

    # -- public --------------------------------------------------------------------------------
    def embed(self, sequences: list[str]) -> list[Tensor]:
        """``[len(s), dim]`` float32 per chain (fp16-rounded), computing only what no cache holds."""
        items = {self.key(s): (s, len(s)) for s in sequences}
        found = self._lookup(items, lambda todo: self.provider.embed([items[k][0] for k in todo]))
        return [found[self.key(s)] for s in sequences]

    def embed_joint(self, pairs: list[ChainPair]) -> list[Tensor]:
        """``[joint_length, dim]`` per complex for the SC architecture (one PLM pass each)."""
        texts = ["joint:" + ",".join(lig) + "|" + ",".join(rec) for lig, rec in pairs]
        items = {self.key(t): (p, joint_length(*p)) for t, p in zip(texts, pairs)}
        found = self._lookup(items, lambda todo: self.provider.embed_joint([items[k][0] for k in todo]))
        return [found[self.key(t)] for t in texts]

    def clear_memory(self) -> None:
        self._memory.clear()
        self._used = 0

    # -- internals -----------------------------------------------------------------------------
    def _lookup(self, items: dict[str, tuple[Any, int]], compute) -> dict[str, Tensor]:
        found: dict[str, Tensor] = {}
        todo = []
        for key, (_, length) in items.items():
            tensor = self._memory_get(key)
            if tensor is None:
                tensor = self._disk_get(key, length)
            if tensor is None:
                todo.append(key)
            else:
                found[key] = tensor
        if todo:
            with torch.no_grad():
                computed = compute(todo)
            for key, tensor in zip(todo, computed):
                half = tensor.detach().to("cpu", torch.float16).contiguous()
                self.stats["computed"] += 1
                self._disk_put(key, half)
                self._memory_put(key, half)
                found[key] = half
        return {k: v.float() for k, v in found.items()}

    def _memory_get(self, key: str) -> Tensor | None:
        tensor = self._memory.get(key)
        if tensor is not None:
            self._memory.move_to_end(key)
            self.stats["memory"] += 1
        return tensor

    def _memory_put(self, key: str, tensor: Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.memory_bytes:
            return
        self._memory[key] = tensor
        self._used += size
        while self._used > self.memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._used -= old.numel() * old.element_size()

    def _disk_get(self, key: str, length: int) -> Tensor | None:
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
            ok = (
                isinstance(tensor, Tensor)
                and tensor.dtype == torch.float16
                and tuple(tensor.shape) == (length, self.dim)
                and bool(torch.isfinite(tensor).all())
            )
        except Exception:  # any unreadable file (truncated, not a torch file) is recomputed
            ok = False
        if not ok:
            self.stats["corrupt"] += 1
            return None
        self.stats["disk"] += 1
        self._memory_put(key, tensor)
        return tensor

    def _disk_put(self, key: str, tensor: Tensor) -> None:
        path = self.path(key)
        if path is not None:
            atomic_save(lambda tmp: torch.save(tensor, tmp), path)
