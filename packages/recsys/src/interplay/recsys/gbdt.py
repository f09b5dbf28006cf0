"""LightGBM baseline on exactly the features the neural models see.

The data module's batches (fitted vocabularies and numeric transforms, train-only statistics) are
flattened into a matrix: categorical ids become LightGBM categorical features, numeric columns stay
numeric, and the behaviour sequence contributes its length (trees cannot use item sequences
directly). Early stopping watches the validation split; the test split is scored once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from interplay.recsys.metrics import CTRMetrics


def collect_split(datamodule: Any, split: str) -> dict[str, np.ndarray]:
    """Concatenate the batches of ``split`` into numpy arrays (features, label, user, length)."""
    parts: dict[str, list[np.ndarray]] = {
        "categorical": [],
        "numeric": [],
        "label": [],
        "user": [],
        "length": [],
    }
    loader = datamodule.batches(split)  # unshuffled, for every split
    for batch in loader:
        parts["categorical"].append(batch["categorical"].numpy())
        parts["numeric"].append(batch.get("numeric", torch.zeros(len(batch["label"]), 0)).numpy())
        parts["label"].append(batch["label"].numpy())
        if "user" in batch:
            parts["user"].append(batch["user"].numpy())
        if "sequence_length" in batch:
            parts["length"].append(batch["sequence_length"].numpy())
    out = {k: np.concatenate(v) for k, v in parts.items() if v}
    columns = [out["categorical"].astype(np.float32), out["numeric"].astype(np.float32)]
    if "length" in out:
        columns.append(out["length"].astype(np.float32)[:, None])
    out["features"] = np.concatenate(columns, axis=1)
    return out


def train_lightgbm(
    datamodule: Any,
    *,
    num_leaves: int = 63,
    learning_rate: float = 0.05,
    n_estimators: int = 2000,
    early_stopping_rounds: int = 50,
    min_child_samples: int = 20,
    seed: int = 0,
    long_tail_k: int = 3,
) -> dict[str, float]:
    """Fit LightGBM (early stopping on validation logloss) and score validation and test once."""
    try:
        import lightgbm as lgb
    except ImportError as err:  # pragma: no cover - lightgbm is a recsys dependency
        raise ImportError("the LightGBM baseline needs lightgbm: pip install lightgbm") from err
    datamodule.setup("fit")
    train, val, test = (collect_split(datamodule, s) for s in ("train", "val", "test"))
    n_cat = train["categorical"].shape[1]
    model = lgb.LGBMClassifier(
        num_leaves=num_leaves,
        learning_rate=learning_rate,
        n_estimators=n_estimators,
        min_child_samples=min_child_samples,
        random_state=seed,
        verbose=-1,
    )
    model.fit(
        train["features"],
        train["label"],
        eval_set=[(val["features"], val["label"])],
        eval_metric="binary_logloss",
        categorical_feature=list(range(n_cat)),
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    results: dict[str, float] = {"best_iteration": float(model.best_iteration_ or n_estimators)}
    for name, split in (("val", val), ("test", test)):
        probs = model.predict_proba(split["features"])[:, 1]
        metric = CTRMetrics(long_tail_k)
        metric.update(
            torch.from_numpy(probs),
            torch.from_numpy(split["label"]),
            torch.from_numpy(split["user"]) if "user" in split else None,
            torch.from_numpy(split["length"]) if "length" in split else None,
        )
        results.update({f"{name}/{k}": float(v) for k, v in metric.compute().items()})
    return results
