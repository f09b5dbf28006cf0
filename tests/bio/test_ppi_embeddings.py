"""Embedding providers and the on-disk store (interplay.bio.ppi.embeddings)."""

from __future__ import annotations

import pytest
import torch

from interplay.bio.ppi.embeddings import (
    EmbeddingProvider,
    EmbeddingStore,
    ESM2Provider,
    RandomPLMProvider,
    RandomProteinLM,
    create_provider,
    joint_length,
)
from interplay.core.errors import ConfigError, UnknownNameError

CHAINS = ["ACDEFGHIKL", "MNPQ", "RSTVWYXBZUO"]


@pytest.fixture(scope="module")
def provider():
    return RandomPLMProvider(dim=16, layers=1, heads=2, seed=0)


def test_random_plm_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = RandomProteinLM(dim=16, layers=1, heads=2, seed=5)
    assert torch.equal(torch.rand(3), expected)
    second = RandomProteinLM(dim=16, layers=1, heads=2, seed=5)
    other = RandomProteinLM(dim=16, layers=1, heads=2, seed=6)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.token_embedding.weight, other.token_embedding.weight)


def test_provider_shapes_and_batch_independence(provider):
    assert isinstance(provider, EmbeddingProvider)
    together = provider.embed(CHAINS)
    assert [tuple(t.shape) for t in together] == [(len(c), 16) for c in CHAINS]
    alone = provider.embed([CHAINS[1]])[0]  # no padding: the result must not depend on the batch
    torch.testing.assert_close(together[1], alone, atol=1e-5, rtol=1e-5)
    # contextual: the same residue in another sequence gets another feature
    assert not torch.allclose(provider.embed(["AAAA"])[0][0], provider.embed(["ACDE"])[0][0])


def test_joint_embedding_is_one_pass_with_separators(provider):
    ligand, receptor = ("ACDEF", "GHI"), ("KLMNPQ",)
    (joint,) = provider.embed_joint([(ligand, receptor)])
    assert joint.shape == (joint_length(ligand, receptor), 16) == (5 + 3 + 6 + 2, 16)
    # one pass: the ligand residues see the receptor, so they differ from the per-chain features
    assert not torch.allclose(joint[:5], provider.embed(["ACDEF"])[0], atol=1e-4)


def test_store_miss_then_memory_and_disk_hits(provider, tmp_path):
    store = EmbeddingStore(provider, tmp_path)
    miss = store.embed(CHAINS)
    assert store.stats == {"memory": 0, "disk": 0, "computed": 3, "corrupt": 0}
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == 3 and all(f.name[:2] == f.parent.name for f in files)
    hit = store.embed(CHAINS[::-1])
    assert store.stats["memory"] == 3 and store.stats["computed"] == 3
    for a, b in zip(miss, hit[::-1]):
        assert torch.equal(a, b)
    # values are the provider's, rounded to fp16
    direct = provider.embed(CHAINS)
    for a, b in zip(miss, direct):
        assert a.dtype == torch.float32 and torch.equal(a, b.half().float())
    fresh = EmbeddingStore(provider, tmp_path)  # a new process: the disk answers
    from_disk = fresh.embed(CHAINS)
    assert fresh.stats == {"memory": 0, "disk": 3, "computed": 0, "corrupt": 0}
    for a, b in zip(miss, from_disk):
        assert torch.equal(a, b)


def test_store_keys_depend_on_the_provider(tmp_path):
    a = EmbeddingStore(RandomPLMProvider(dim=16, layers=1, heads=2, seed=0), tmp_path)
    b = EmbeddingStore(RandomPLMProvider(dim=16, layers=1, heads=2, seed=1), tmp_path)
    assert a.key("ACD") != b.key("ACD")
    assert not torch.equal(a.embed(["ACD"])[0], b.embed(["ACD"])[0])
    assert b.stats["computed"] == 1


def test_corrupt_or_misshaped_files_are_recomputed(provider, tmp_path):
    store = EmbeddingStore(provider, tmp_path)
    expected = store.embed(["ACDEFG", "KLM"])
    truncated, wrong_shape = (store.path(store.key(s)) for s in ("ACDEFG", "KLM"))
    truncated.write_bytes(truncated.read_bytes()[:20])
    torch.save(torch.zeros(2, 16, dtype=torch.float16), wrong_shape)
    fresh = EmbeddingStore(provider, tmp_path)
    again = fresh.embed(["ACDEFG", "KLM"])
    assert fresh.stats["corrupt"] == 2 and fresh.stats["computed"] == 2
    for a, b in zip(expected, again):
        assert torch.equal(a, b)
    assert torch.load(truncated, weights_only=True).shape == (6, 16)  # rewritten


def test_store_joint_cache(provider):
    store = EmbeddingStore(provider)  # memory only
    pairs = [(("ACDEF",), ("GHIK", "LM")), (("ACDEF",), ("GHIK",))]
    first = store.embed_joint(pairs)
    second = store.embed_joint(pairs[:1])
    assert store.stats["computed"] == 2 and store.stats["memory"] == 1
    assert torch.equal(first[0], second[0]) and first[0].shape == (5 + 4 + 2 + 2, 16)


def test_memory_lru_is_bounded(provider):
    store = EmbeddingStore(provider, memory_mb=16 * 10 * 2 / 2**20)  # room for one 10-residue chain
    store.embed(["ACDEFGHIKL"])
    store.embed(["MNPQRSTVWY"])
    store.embed(["ACDEFGHIKL"])
    assert store.stats["computed"] == 3 and store.stats["memory"] == 0


def test_esm2_without_weights_is_a_config_error_not_a_download(tmp_path):
    with pytest.raises(ConfigError) as info:
        ESM2Provider("esm2_t6_8M_UR50D", weights=str(tmp_path / "missing.pt"))
    message = str(info.value)
    assert "pip install fair-esm" in message and "transformers" in message and "missing.pt" in message
    with pytest.raises(UnknownNameError, match="unknown ESM-2 model"):
        ESM2Provider("esm2_huge")


def test_create_provider_validates_names_and_arguments():
    assert isinstance(create_provider("random", {"dim": 16, "layers": 1, "heads": 2}), RandomPLMProvider)
    with pytest.raises(UnknownNameError, match="known: random, esm2"):
        create_provider("prott5")
    with pytest.raises(ConfigError, match="'width'"):
        create_provider("random", {"width": 8})
    with pytest.raises(ConfigError, match="divisible"):
        create_provider("random", {"dim": 10, "heads": 4})
