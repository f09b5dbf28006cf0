"""Drug sensitivity data: SMILES tokens and validation, readers, splits, train-only fitting, synthetic set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem, RDConfig

from interplay.bio.drug.data import (
    DrugSensitivityDataModule,
    drug_sensitivity,
    load_tables,
    read_drug_table,
    read_expression,
    read_pairs,
    split_pairs,
)
from interplay.bio.drug.smiles import (
    SmilesVocabulary,
    atom_token_mask,
    canonical_smiles,
    mol_from_smiles,
    morgan_fingerprints,
    randomized_smiles,
    tokenize_smiles,
    validate_smiles,
)
from interplay.bio.drug.synthetic import write_synthetic_drug_data
from interplay.core.errors import ConfigError, DataError

NCI_SMILES = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("drug")
    return write_synthetic_drug_data(
        directory, n_drugs=12, n_cell_lines=10, n_genes=24, n_pathways=6, expression_format="both", seed=3
    )


@pytest.fixture(scope="module")
def tables(files):
    return load_tables(files.drugs, files.expression, files.pairs, genes=files.genes)


# ---------------------------------------------------------------------------------------- SMILES


def test_tokenizer_round_trip_on_rdkit_nci_smiles():
    smiles = [line.split()[0] for line in NCI_SMILES.read_text().splitlines() if line.strip()]
    assert len(smiles) > 4000
    for text in smiles:
        assert "".join(tokenize_smiles(text)) == text
    # canonical and randomised forms too (these use ring digits and bracket atoms differently)
    for text in smiles[:300]:
        mol = Chem.MolFromSmiles(text)
        if mol is None:
            continue
        for form in (canonical_smiles(mol), randomized_smiles(mol, seed=1)):
            assert "".join(tokenize_smiles(form)) == form


@pytest.mark.parametrize(
    ("smiles", "tokens"),
    [
        ("ClCBr", ["Cl", "C", "Br"]),
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("N[C@@H](C)C(=O)O", ["N", "[C@@H]", "(", "C", ")", "C", "(", "=", "O", ")", "O"]),
        ("C%10CC%10", ["C", "%10", "C", "C", "%10"]),
        ("C[N+](=O)[O-]", ["C", "[N+]", "(", "=", "O", ")", "[O-]"]),
        ("C/C=C\\C", ["C", "/", "C", "=", "C", "\\", "C"]),
    ],
)
def test_tokenizer_special_cases(smiles, tokens):
    assert tokenize_smiles(smiles) == tokens


def test_tokenizer_rejects_unknown_characters():
    with pytest.raises(DataError, match="'X' at position 1"):
        tokenize_smiles("CXC")


def test_atom_tokens_match_rdkit_atom_count():
    for text in ("C[N+](=O)[O-]", "c1cc[nH]c1", "ClC(Br)C%10CC%10", "[H]OC"):
        mol = mol_from_smiles(text, keep_hydrogens=True)
        assert atom_token_mask(tokenize_smiles(text)).sum() == mol.GetNumAtoms()


def test_invalid_smiles_error_names_every_drug():
    drugs = {"aspirin": "CC(=O)Oc1ccccc1C(=O)O", "bad1": "C1CC", "ok": "CCO", "bad2": "c1ccccc", "empty": ""}
    with pytest.raises(DataError) as info:
        validate_smiles(drugs, source="drugs.csv")
    message = str(info.value)
    assert message.startswith("drugs.csv: 3 invalid SMILES")
    for name in ("bad1", "bad2", "empty"):
        assert name in message
    assert "aspirin" not in message and "ok (" not in message


def test_vocabulary_special_tokens_and_round_trip():
    vocabulary = SmilesVocabulary.fit(["CCO", "c1ccccc1Cl"])
    assert vocabulary.tokens[:4] == ["<pad>", "<unk>", "<start>", "<stop>"]
    ids = vocabulary.encode("ClCCO")
    assert ids[0] == vocabulary.start_id and ids[-1] == vocabulary.stop_id
    assert vocabulary.decode(ids) == "ClCCO"
    assert vocabulary.encode("CBr", add_start_stop=False)[1] == vocabulary.unk_id  # unseen token
    restored = SmilesVocabulary.from_state_dict(vocabulary.state_dict())
    assert restored.tokens == vocabulary.tokens


def test_augmentation_writes_the_same_molecule_differently():
    mol = Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O")
    forms = {randomized_smiles(mol, seed) for seed in range(10)}
    assert len(forms) > 1
    assert {canonical_smiles(Chem.MolFromSmiles(f)) for f in forms} == {canonical_smiles(mol)}
    assert randomized_smiles(mol, 7) == randomized_smiles(mol, 7)  # seeded


def test_morgan_fingerprints_shape_and_bits():
    molecules = [Chem.MolFromSmiles(s) for s in ("CCO", "c1ccccc1")]
    bits = morgan_fingerprints(molecules, radius=2, n_bits=512)
    assert bits.shape == (2, 512) and set(np.unique(bits)) <= {0, 1}
    assert morgan_fingerprints(molecules, n_bits=2048).shape == (2, 2048)
    assert bits[0].sum() > 0 and not np.array_equal(bits[0], bits[1])


# --------------------------------------------------------------------------------------- readers


def test_drug_table_is_canonicalised(files, tables):
    raw = read_drug_table(files.drugs)
    for drug, smiles in tables.smiles.items():
        assert smiles == canonical_smiles(Chem.MolFromSmiles(raw[drug]))


def test_smi_format(tmp_path):
    path = tmp_path / "drugs.smi"
    path.write_text("CCO\tethanol\nc1ccccc1\tbenzene\n")
    assert read_drug_table(path).to_dict() == {"ethanol": "CCO", "benzene": "c1ccccc1"}


def test_drug_table_missing_columns(tmp_path):
    path = tmp_path / "drugs.csv"
    path.write_text("name,structure\nx,CCO\n")
    with pytest.raises(DataError, match="no 'smiles' column"):
        read_drug_table(path)


def test_expression_csv_and_h5ad_agree(files, tables):
    h5ad = read_expression(files.directory / "gene_expression.h5ad", tables.genes)
    np.testing.assert_allclose(h5ad.to_numpy(), tables.expression.to_numpy(), atol=1e-4)
    assert list(h5ad.index) == tables.cell_lines


def test_missing_gene_is_named_or_filled(files):
    genes = ["GENE0001", "NOTAGENE", "GENE0002"]
    with pytest.raises(DataError, match="NOTAGENE"):
        read_expression(files.expression, genes)
    with pytest.warns(UserWarning, match="NOTAGENE"):
        filled = read_expression(files.expression, genes, missing_genes="zero")
    assert list(filled.columns) == genes and (filled["NOTAGENE"] == 0).all()


def test_nan_expression_names_cell_and_gene(tmp_path):
    path = tmp_path / "expression.csv"
    path.write_text("cell_line,G1,G2\nA,1.0,2.0\nB,,3.0\n")
    with pytest.raises(DataError, match="B/G1"):
        read_expression(path)


def test_pairs_reader(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text(",drug,cell_line,IC50\n0,d1,c1,1.0\n1,d1,c1,3.0\n2,d2,c1,0.5\n")
    pairs = read_pairs(path)
    assert list(pairs.columns) == ["drug", "cell_line", "ln_ic50"]
    assert pairs.set_index("drug").loc["d1", "ln_ic50"] == 2.0  # replicates averaged
    path.write_text("drug,cell_line,ln_ic50\nd1,c1,abc\n")
    with pytest.raises(DataError, match="lines 2"):
        read_pairs(path)


def test_pairs_naming_unknown_entities(files, tmp_path):
    pairs = pd.read_csv(files.pairs)
    pairs.loc[0, "drug"] = "NOT_A_DRUG"
    path = tmp_path / "pairs.csv"
    pairs.to_csv(path, index=False)
    with pytest.raises(DataError, match="NOT_A_DRUG"):
        load_tables(files.drugs, files.expression, path, genes=files.genes)
    with pytest.warns(UserWarning, match="dropping"):
        tables = load_tables(files.drugs, files.expression, path, genes=files.genes, unknown="drop")
    assert len(tables.pairs) == len(pairs) - 1


def test_missing_root_is_one_line_error(tmp_path):
    with pytest.raises(DataError) as info:
        drug_sensitivity(root=tmp_path / "nowhere")
    assert "drug table not found" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("how", ["random", "cell_line", "drug"])
def test_splits_are_disjoint_and_hold_out_entities(tables, how):
    index = split_pairs(tables.pairs, how, test_fraction=0.2, val_fraction=0.2, seed=5)
    all_rows = np.concatenate(list(index.values()))
    assert len(all_rows) == len(tables.pairs) == len(np.unique(all_rows))
    assert all(len(rows) for rows in index.values())
    if how != "random":
        entity = tables.pairs[how].to_numpy()
        train, val, test = (set(entity[index[s]]) for s in ("train", "val", "test"))
        assert not train & test and not train & val and not val & test
        assert len(test) == round(0.2 * len(set(entity)))
    again = split_pairs(tables.pairs, how, test_fraction=0.2, val_fraction=0.2, seed=5)
    assert all(np.array_equal(index[s], again[s]) for s in index)  # seeded
    other = split_pairs(tables.pairs, how, test_fraction=0.2, val_fraction=0.2, seed=6)
    assert not np.array_equal(index["test"], other["test"])


def test_split_arguments_are_checked(tables):
    with pytest.raises(ConfigError, match="split must be one of"):
        split_pairs(tables.pairs, "scaffold")
    with pytest.raises(DataError, match="at least one must stay"):
        split_pairs(tables.pairs, "drug", test_fraction=0.99)


# ------------------------------------------------------------------------- train-only fitting


def test_scalers_are_fitted_on_the_training_split_only(tables):
    module = DrugSensitivityDataModule(tables, split="cell_line", test_fraction=0.3, val_fraction=0.2, seed=0)
    train = module.index["train"]
    labels = tables.pairs["ln_ic50"].to_numpy()
    assert module.label_min == labels[train].min() and module.label_max == labels[train].max()
    train_cells = np.unique(module.pair_cell[train])
    expression = tables.expression.to_numpy()
    np.testing.assert_allclose(module.standardizer.mean, expression[train_cells].mean(0))
    np.testing.assert_allclose(module.standardizer.std, expression[train_cells].std(0))
    # held-out cell lines moved the statistics: fitting on everything would differ
    assert not np.allclose(module.standardizer.mean, expression.mean(0))
    scaled = module.scaled_labels.numpy()
    assert scaled[train].min() == pytest.approx(0.0) and scaled[train].max() == pytest.approx(1.0)
    standardised = module.expression_tensor.numpy()[train_cells]
    np.testing.assert_allclose(standardised.mean(0), 0.0, atol=1e-5)
    # the vocabulary only knows tokens of training drugs
    test_only = set(module.pair_drug[module.index["test"]]) - set(module.pair_drug[train])
    assert not test_only  # cell-line split: every drug is in training


def test_vocabulary_comes_from_training_drugs(tables):
    module = DrugSensitivityDataModule(
        tables, split="drug", test_fraction=0.25, val_fraction=0.2, augment=False
    )
    train_drugs = np.unique(module.pair_drug[module.index["train"]])
    expected = SmilesVocabulary.fit([tables.smiles.iloc[d] for d in train_drugs])
    assert module.vocabulary.tokens == expected.tokens


def test_batches_and_state_dict_round_trip(tables):
    module = DrugSensitivityDataModule(tables, batch_size=16, eval_batch_size=32, seed=1)
    batch = next(iter(module.train_dataloader()))
    assert batch["smiles"].shape == (16, module.smiles_length) and batch["smiles"].dtype == torch.long
    assert batch["expression"].shape == (16, 24) and batch["fingerprint"].shape == (16, 512)
    assert (batch["smiles"][:, 0] == SmilesVocabulary.start_id).all()
    # evaluation batches read the canonical SMILES, unaugmented and in order
    val = next(iter(module.val_dataloader()))
    rows = module.index["val"][: len(val["label"])]
    assert torch.equal(val["smiles"], module.canonical_tokens[torch.from_numpy(module.pair_drug[rows])])
    other = DrugSensitivityDataModule(tables, split="cell_line", seed=1)
    other.load_state_dict(module.state_dict())
    assert other.vocabulary.tokens == module.vocabulary.tokens
    assert (other.label_min, other.label_max, other.smiles_length) == (
        module.label_min,
        module.label_max,
        module.smiles_length,
    )
    np.testing.assert_array_equal(other.standardizer.mean, module.standardizer.mean)


def test_synthetic_files_are_complete_and_reproducible(files, tmp_path):
    for path in (files.drugs, files.expression, files.pairs, files.genes, files.truth):
        assert path.is_file()
    again = write_synthetic_drug_data(
        tmp_path / "again",
        n_drugs=12,
        n_cell_lines=10,
        n_genes=24,
        n_pathways=6,
        expression_format="both",
        seed=3,
    )
    for name in ("drugs.csv", "pairs.csv", "gene_expression.csv"):
        assert (files.directory / name).read_bytes() == (again.directory / name).read_bytes()
    shutil.rmtree(again.directory)
