"""Treatment-effect data: the IHDP readers, the continuous-dosage IHDP simulation, synthetic generators.

Formats
-------
* **IHDP CSV** in CEVAE's layout (Louizos et al., 2017, ``datasets/IHDP/csv/ihdp_npci_{1..10}.csv``):
  747 rows, 30 columns, no header: ``t, y_factual, y_cfactual, mu0, mu1, x1..x25``. The first six
  covariates are continuous (standardised), the other 19 binary; ``x14`` (column index 13 of ``x``)
  is coded {1, 2}. CEVAE's loader subtracts 1 from it (``x[:, 13] -= 1``) and so does
  :func:`read_ihdp_csv` by default; trees are unaffected, neural models see a 0/1 column like the
  other binary ones. 139 of the 747 children are treated; ``mu0``/``mu1`` are the noise-free
  potential outcomes of Hill (2011)'s response surface B.
* **IHDP-100 / IHDP-1000 NPZ** (CFRNet, Shalit et al., 2017): ``ihdp_npci_1-100.train.npz`` (672
  units) and ``.test.npz`` (75 units) with ``x [n, 25, R]`` and ``t, yf, ycf, mu0, mu1 [n, R]`` for
  ``R`` replications. ``x14`` is shifted to {0, 1} the same way when it is coded {1, 2}.

Simulations
-----------
* :func:`simulate_ihdp_continuous` — the continuous-treatment IHDP of VCNet (Nie et al., 2021,
  ``ihdp_generate_data.py``), reused by TransTEE (Zhang et al., 2023, ``Continuous/data``): each
  covariate is rescaled as ``(x - min) / max`` (sic), the dosage is
  ``t = sigmoid(2 (x1 / (1 + x2) + max(x3, x5, x6) / (0.2 + min(x3, x5, x6))
  + tanh(5 (mean(x16..x25) - c)) - 2 + 0.5 e))``
  and the outcome ``y = sin(3 pi t) / (1.2 - t) * (tanh(5 (mean(x4, x7..x15) - c)) +
  exp(0.2 (x1 - x6)) / (0.1 + min(x2, x3, x5))) + 0.5 e'`` (1-based covariate names; the code's
  ``x3, x4, x5`` are columns 2, 4, 5 and both tanh terms centre on the same constant ``c``, the mean
  of the first group, as in the released code). VCNet draws the covariates from its own
  ``ihdp.csv`` (raw units); here they come from the CEVAE CSV (standardised continuous columns), so
  the same formulas give a differently scaled dataset and figures are not comparable to the paper's.
* :func:`simulate_vcnet` — VCNet's Simulation 1 (six U(0, 1) covariates), as TransTEE's ``simu1.py``.
* :func:`make_synthetic_ihdp` — an IHDP look-alike in the CEVAE format (25 covariates with the same
  types, 139 of 747 treated by a confounded assignment, Hill's response surface B), so that tests and
  the demo need no download; :func:`write_synthetic_ihdp` writes ten replications as CSV files.
* :func:`make_synthetic_categorical` and :func:`make_synthetic_dosage` — multi-valued treatments
  and (treatment, dosage) pairs with known potential outcomes.

Every reader returns a :class:`CausalData`; user mistakes raise :class:`CausalInputError` (a
:class:`~interplay.core.errors.DataError`) naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from interplay.core.data import atomic_save, atomic_write
from interplay.core.errors import DataError

__all__ = [
    "IHDP_COLUMNS",
    "TREATMENT_KINDS",
    "CausalData",
    "CausalInputError",
    "IHDPReplications",
    "ihdp_csv_files",
    "make_synthetic_categorical",
    "make_synthetic_dosage",
    "make_synthetic_ihdp",
    "read_ihdp_csv",
    "read_ihdp_npz",
    "simulate_ihdp_continuous",
    "simulate_vcnet",
    "write_ihdp_csv",
    "write_ihdp_npz",
    "write_synthetic_ihdp",
]

IHDP_COLUMNS = ("t", "y_factual", "y_cfactual", "mu0", "mu1", *(f"x{i}" for i in range(1, 26)))
IHDP_X14 = 13  # 0-based column of x14 inside x, the binary covariate coded {1, 2}
TREATMENT_KINDS = ("binary", "categorical", "continuous", "dosage")
PathLike = str | os.PathLike


class CausalInputError(DataError, ValueError):
    """Bad treatment-effect input (shape, NaN, treatment values); a DataError that is also a ValueError."""


Response = Callable[..., np.ndarray]


@dataclass
class CausalData:
    """Covariates, treatments and outcomes of one dataset, with the truth where it is known.

    Attributes:
        x: covariates ``[n, p]``.
        t: treatments ``[n]``: 0/1 (``binary``), class indices (``categorical``), a real value
            (``continuous``), or the treatment index of a (treatment, ``dosage``) pair.
        y: observed (factual) outcomes ``[n]``.
        treatment: one of :data:`TREATMENT_KINDS`.
        n_treatments: number of treatment values for discrete treatments (1 for ``continuous``).
        dosage: dosages ``[n]`` for ``dosage`` treatments.
        potential_outcomes: noise-free potential outcomes ``[n, n_treatments]`` for discrete
            treatments (IHDP: ``mu0, mu1``).
        y_cf: the noisy counterfactual outcome of binary data where it was simulated.
        response: noise-free outcome ``response(x, t)`` (``response(x, t, dosage)`` for dosage
            treatments) for treatments with a continuous part: the truth of dose-response curves.
        name: where the data came from (a file, a generator).
    """

    x: np.ndarray
    t: np.ndarray
    y: np.ndarray
    treatment: str = "binary"
    n_treatments: int = 2
    dosage: np.ndarray | None = None
    potential_outcomes: np.ndarray | None = None
    y_cf: np.ndarray | None = None
    response: Response | None = field(default=None, repr=False, compare=False)
    name: str = "data"

    def __post_init__(self) -> None:
        if self.treatment not in TREATMENT_KINDS:
            raise CausalInputError(
                f"{self.name}: treatment must be one of {', '.join(TREATMENT_KINDS)}, got {self.treatment!r}"
            )
        self.x = np.asarray(self.x, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.float64)
        discrete = self.treatment in ("binary", "categorical", "dosage")
        self.t = np.asarray(self.t, dtype=np.int64 if discrete else np.float64)
        n = len(self.y)
        if self.x.ndim != 2 or len(self.x) != n or self.t.shape != (n,):
            raise CausalInputError(
                f"{self.name}: expected x [n, p], t [n] and y [n] with one n, got x {self.x.shape}, "
                f"t {self.t.shape}, y {self.y.shape}"
            )
        if self.potential_outcomes is not None:
            self.potential_outcomes = np.asarray(self.potential_outcomes, dtype=np.float64)
            if self.potential_outcomes.shape != (n, self.n_treatments):
                raise CausalInputError(
                    f"{self.name}: potential_outcomes must be [n, n_treatments] = "
                    f"[{n}, {self.n_treatments}], "
                    f"got {self.potential_outcomes.shape}"
                )
        if self.treatment == "dosage":
            if self.dosage is None:
                raise CausalInputError(f"{self.name}: dosage treatments need a dosage array")
            self.dosage = np.asarray(self.dosage, dtype=np.float64)
            if self.dosage.shape != (n,):
                raise CausalInputError(f"{self.name}: dosage must be [n] = [{n}], got {self.dosage.shape}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_covariates(self) -> int:
        return self.x.shape[1]

    @property
    def mu0(self) -> np.ndarray | None:
        return None if self.potential_outcomes is None else self.potential_outcomes[:, 0]

    @property
    def mu1(self) -> np.ndarray | None:
        return None if self.potential_outcomes is None else self.potential_outcomes[:, 1]

    @property
    def true_effect(self) -> np.ndarray | None:
        """``mu1 - mu0`` of binary data (``None`` when the truth is unknown)."""
        if self.treatment != "binary" or self.potential_outcomes is None:
            return None
        return self.potential_outcomes[:, 1] - self.potential_outcomes[:, 0]

    def subset(self, index: np.ndarray) -> CausalData:
        """The units at ``index`` (the response function is shared)."""

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return dataclasses.replace(
            self,
            x=self.x[index],
            t=self.t[index],
            y=self.y[index],
            dosage=take(self.dosage),
            potential_outcomes=take(self.potential_outcomes),
            y_cf=take(self.y_cf),
        )


# -- IHDP CSV (CEVAE) ------------------------------------------------------------------------------------
def _shift_x14(x: np.ndarray, source: str, shift: bool) -> np.ndarray:
    """CEVAE's ``x[:, 13] -= 1``: x14 is coded {1, 2}; a column already coded {0, 1} is left alone."""
    if not shift or x.shape[1] <= IHDP_X14:
        return x
    values = set(np.unique(x[:, IHDP_X14]).tolist())
    if values <= {1.0, 2.0}:
        x = x.copy()
        x[:, IHDP_X14] -= 1.0
    elif not values <= {0.0, 1.0}:
        raise CausalInputError(
            f"{source}: x14 (covariate column {IHDP_X14 + 1}) should be binary, coded {{1, 2}} or "
            f"{{0, 1}}; found values {sorted(values)[:6]}"
        )
    return x


def read_ihdp_csv(path: PathLike, *, shift_x14: bool = True) -> CausalData:
    """One IHDP replication in CEVAE's CSV layout (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CausalInputError(f"IHDP CSV not found: {path}")
    rows: list[list[float]] = []
    with open(path, newline="") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            cells = line.strip().split(",")
            if len(cells) != len(IHDP_COLUMNS):
                raise CausalInputError(
                    f"{path}, line {number}: expected {len(IHDP_COLUMNS)} comma-separated columns "
                    f"(t, y_factual, y_cfactual, mu0, mu1, x1..x25), found {len(cells)}"
                )
            if not rows and not _is_number(cells[0]):  # a header line (some copies carry one): skip it
                continue
            try:
                rows.append([float(c) for c in cells])
            except ValueError:
                raise CausalInputError(
                    f"{path}, line {number}: a value is not a number ({line.strip()[:80]!r})"
                ) from None
    if not rows:
        raise CausalInputError(f"{path}: no data rows")
    table = np.asarray(rows, dtype=np.float64)
    bad = ~np.isfinite(table)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise CausalInputError(f"{path}, row {row + 1}: column {IHDP_COLUMNS[col]} is {table[row, col]}")
    t = table[:, 0]
    if not np.isin(t, (0.0, 1.0)).all():
        raise CausalInputError(f"{path}: column t must be 0 or 1, found {sorted(set(t.tolist()))[:6]}")
    return CausalData(
        x=_shift_x14(table[:, 5:], str(path), shift_x14),
        t=t.astype(np.int64),
        y=table[:, 1],
        y_cf=table[:, 2],
        potential_outcomes=table[:, 3:5],
        treatment="binary",
        n_treatments=2,
        name=str(path),
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_ihdp_csv(path: PathLike, data: CausalData, *, x14_one_two: bool = True) -> Path:
    """Write binary ``data`` in CEVAE's layout (atomically); ``x14_one_two`` codes x14 as {1, 2} again."""
    if data.treatment != "binary" or data.potential_outcomes is None or data.n_covariates != 25:
        raise CausalInputError(
            "the IHDP CSV layout holds binary data with mu0/mu1 and 25 covariates; "
            f"got {data.treatment} data with {data.n_covariates} covariates"
        )
    y_cf = data.y_cf if data.y_cf is not None else data.potential_outcomes[np.arange(len(data)), 1 - data.t]
    x = data.x.copy()
    if x14_one_two and set(np.unique(x[:, IHDP_X14]).tolist()) <= {0.0, 1.0}:
        x[:, IHDP_X14] += 1.0
    table = np.column_stack([data.t, data.y, y_cf, data.potential_outcomes, x])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        for row in table:
            f.write(",".join(_number(v) for v in row) + "\n")
    return path


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def ihdp_csv_files(directory: PathLike) -> dict[int, Path]:
    """``{replication: path}`` of the ``ihdp_npci_<k>.csv`` files in ``directory``."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CausalInputError(f"IHDP folder not found: {directory} (expected ihdp_npci_1.csv ... inside)")
    files = {}
    for path in directory.iterdir():
        match = re.fullmatch(r"ihdp_npci_(\d+)\.csv", path.name)
        if match:
            files[int(match.group(1))] = path
    if not files:
        raise CausalInputError(f"{directory}: no ihdp_npci_<k>.csv files (CEVAE's IHDP layout)")
    return dict(sorted(files.items()))


# -- IHDP NPZ (CFRNet) -----------------------------------------------------------------------------------
NPZ_KEYS = ("x", "t", "yf", "ycf", "mu0", "mu1")


class IHDPReplications:
    """The replications of one IHDP-100 / IHDP-1000 NPZ file (``x [n, 25, R]``, the rest ``[n, R]``)."""

    def __init__(self, path: PathLike, *, shift_x14: bool = True) -> None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise CausalInputError(f"IHDP NPZ not found: {path}")
        try:
            with np.load(path) as archive:
                missing = [k for k in NPZ_KEYS if k not in archive.files]
                if missing:
                    raise CausalInputError(
                        f"{path}: missing key(s) {', '.join(missing)} (expected {', '.join(NPZ_KEYS)})"
                    )
                arrays = {k: np.asarray(archive[k], dtype=np.float64) for k in NPZ_KEYS}
        except (OSError, ValueError) as err:
            if isinstance(err, CausalInputError):
                raise
            raise CausalInputError(f"{path}: not a readable NPZ archive ({err})") from None
        x = arrays["x"]
        if x.ndim == 2:  # a single replication stored without the last axis
            x = x[:, :, None]
            arrays = {k: (v if k == "x" else v.reshape(len(v), -1)) for k, v in arrays.items()}
        if x.ndim != 3:
            raise CausalInputError(f"{path}: x must be [n, 25, R], got shape {x.shape}")
        n, _, reps = x.shape
        for key in NPZ_KEYS[1:]:
            if arrays[key].shape != (n, reps):
                raise CausalInputError(
                    f"{path}: {key} must be [n, R] = [{n}, {reps}], got {arrays[key].shape}"
                )
        for key, value in arrays.items():
            if not np.isfinite(value).all():
                raise CausalInputError(f"{path}: {key} contains NaN or inf")
        if not np.isin(arrays["t"], (0.0, 1.0)).all():
            raise CausalInputError(f"{path}: t must be 0 or 1")
        self.path, self.shift_x14 = path, shift_x14
        self.arrays = {**arrays, "x": x}

    def __len__(self) -> int:
        return self.arrays["x"].shape[2]

    def replication(self, index: int) -> CausalData:
        """Replication ``index`` (0-based) as :class:`CausalData`."""
        if not 0 <= index < len(self):
            raise CausalInputError(f"{self.path}: replication {index} out of range (file has {len(self)})")
        a = self.arrays
        return CausalData(
            x=_shift_x14(a["x"][:, :, index], str(self.path), self.shift_x14),
            t=a["t"][:, index].astype(np.int64),
            y=a["yf"][:, index],
            y_cf=a["ycf"][:, index],
            potential_outcomes=np.column_stack([a["mu0"][:, index], a["mu1"][:, index]]),
            name=f"{self.path}#{index}",
        )


def read_ihdp_npz(path: PathLike, *, shift_x14: bool = True) -> list[CausalData]:
    """Every replication of an IHDP NPZ file."""
    reps = IHDPReplications(path, shift_x14=shift_x14)
    return [reps.replication(i) for i in range(len(reps))]


def write_ihdp_npz(path: PathLike, replications: Sequence[CausalData]) -> Path:
    """Write binary replications (same n and p) in CFRNet's NPZ layout, atomically."""
    if not replications:
        raise CausalInputError("write_ihdp_npz needs at least one replication")
    n, p = replications[0].x.shape
    for rep in replications:
        if rep.x.shape != (n, p) or rep.potential_outcomes is None or rep.treatment != "binary":
            raise CausalInputError("every replication must be binary data of one shape with mu0/mu1")
    arrays = {
        "x": np.stack([r.x for r in replications], axis=2),
        "t": np.stack([r.t.astype(np.float64) for r in replications], axis=1),
        "yf": np.stack([r.y for r in replications], axis=1),
        "ycf": np.stack(
            [
                r.y_cf if r.y_cf is not None else r.potential_outcomes[np.arange(n), 1 - r.t]
                for r in replications
            ],
            axis=1,
        ),
        "mu0": np.stack([r.potential_outcomes[:, 0] for r in replications], axis=1),
        "mu1": np.stack([r.potential_outcomes[:, 1] for r in replications], axis=1),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_save(write, path)


# -- continuous-dosage IHDP (VCNet / TransTEE) ----------------------------------------------------------
VCNET_GROUP1 = np.array([3, 6, 7, 8, 9, 10, 11, 12, 13, 14])  # drives the outcome's first factor
VCNET_GROUP2 = np.array([15, 16, 17, 18, 19, 20, 21, 22, 23, 24])  # drives the dosage
PI_VCNET = 3.14159  # the released code's constant, kept so the curves match it exactly


def _vcnet_normalise(x: np.ndarray) -> np.ndarray:
    """``(x - min) / max`` per column, as ``ihdp_generate_data.py`` (not a min-max scaling)."""
    x = np.asarray(x, dtype=np.float64)
    low, high = x.min(0), x.max(0)
    if np.any(high == 0):
        raise CausalInputError("simulate_ihdp_continuous: a covariate column has maximum 0 (cannot rescale)")
    return (x - low) / high


def simulate_ihdp_continuous(
    covariates: np.ndarray, *, seed: int = 0, noise: float = 0.5, normalise: bool = True
) -> CausalData:
    """VCNet's continuous-treatment IHDP on ``covariates`` ``[n, 25]`` (IHDP's, in CEVAE's column order).

    Returns continuous :class:`CausalData` with dosages in (0, 1) and ``response(x, t)``, the
    noise-free outcome on the rescaled covariates stored in ``x``.
    """
    covariates = np.asarray(covariates, dtype=np.float64)
    if covariates.ndim != 2 or covariates.shape[1] != 25:
        raise CausalInputError(f"simulate_ihdp_continuous needs covariates [n, 25], got {covariates.shape}")
    x = _vcnet_normalise(covariates) if normalise else covariates
    # both tanh terms centre on the first group's mean, as in the released code
    centre = float(x[:, VCNET_GROUP1].mean(1).mean())
    rng = np.random.default_rng(seed)

    x1, x2, x3, x4, x5 = x[:, 0], x[:, 1], x[:, 2], x[:, 4], x[:, 5]
    triple = np.stack([x3, x4, x5], 1)
    logit = (
        x1 / (1.0 + x2)
        + triple.max(1) / (0.2 + triple.min(1))
        + np.tanh((x[:, VCNET_GROUP2].sum(1) / 10.0 - centre) * 5.0)
        - 2.0
    )
    t = 1.0 / (1.0 + np.exp(-2.0 * (logit + noise * rng.standard_normal(len(x)))))

    def response(xs: np.ndarray, ts: np.ndarray | float) -> np.ndarray:
        xs = np.asarray(xs, dtype=np.float64)
        ts = np.broadcast_to(np.asarray(ts, dtype=np.float64), (len(xs),))
        a1, a2, a3, a4, a5 = xs[:, 0], xs[:, 1], xs[:, 2], xs[:, 4], xs[:, 5]
        factor = np.tanh((xs[:, VCNET_GROUP1].sum(1) / 10.0 - centre) * 5.0) + np.exp(0.2 * (a1 - a5)) / (
            0.1 + np.minimum(np.minimum(a2, a3), a4)
        )
        return 1.0 / (1.2 - ts) * np.sin(ts * 3.0 * PI_VCNET) * factor

    y = response(x, t) + noise * rng.standard_normal(len(x))
    return CausalData(
        x=x, t=t, y=y, treatment="continuous", n_treatments=1, response=response, name="ihdp-continuous"
    )


def simulate_vcnet(n: int = 700, *, seed: int = 0, noise: float = 0.5) -> CausalData:
    """VCNet's Simulation 1: x ~ U(0, 1)^6, a confounded dosage in (0, 1), a smooth non-linear response."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6))
    x1, x2, x3, x4, x5 = x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4]
    logit = (
        (10.0 * np.sin(np.maximum(np.maximum(x1, x2), x3)) + np.maximum(np.maximum(x3, x4), x5) ** 3)
        / (1.0 + (x1 + x5) ** 2)
        + np.sin(0.5 * x3) * (1.0 + np.exp(x4 - 0.5 * x3))
        + x3**2
        + 2.0 * np.sin(x4)
        + 2.0 * x5
        - 6.5
    )
    t = 1.0 / (1.0 + np.exp(-(logit + noise * rng.standard_normal(n))))

    def response(xs: np.ndarray, ts: np.ndarray | float) -> np.ndarray:
        xs = np.asarray(xs, dtype=np.float64)
        ts = np.broadcast_to(np.asarray(ts, dtype=np.float64), (len(xs),))
        a1, a3, a4, a6 = xs[:, 0], xs[:, 2], xs[:, 3], xs[:, 5]
        return np.cos((ts - 0.5) * PI_VCNET * 2.0) * (
            ts**2 + 4.0 * np.maximum(a1, a6) ** 3 / (1.0 + 2.0 * a3**2) * np.sin(a4)
        )

    y = response(x, t) + noise * rng.standard_normal(n)
    return CausalData(
        x=x, t=t, y=y, treatment="continuous", n_treatments=1, response=response, name="vcnet-simu1"
    )


# -- synthetic IHDP look-alike (CEVAE format) ------------------------------------------------------------
SYNTHETIC_IHDP_VERSION = 1


def _synthetic_ihdp_covariates(rng: np.random.Generator, n: int) -> np.ndarray:
    """Six correlated standardised continuous covariates and 19 binary ones (x14 in {0, 1})."""
    mixing = np.eye(6) + 0.3 * rng.standard_normal((6, 6))
    continuous = rng.standard_normal((n, 6)) @ mixing
    continuous[:, 3] = np.round(np.clip(continuous[:, 3], -1.5, 1.5))  # birth order: few levels
    continuous = (continuous - continuous.mean(0)) / continuous.std(0)
    rates = rng.uniform(0.1, 0.9, size=19)
    binary = (rng.random((n, 19)) < rates).astype(np.float64)
    return np.column_stack([continuous, binary])


def make_synthetic_ihdp(
    replication: int = 1, *, seed: int = 0, n: int = 747, n_treated: int = 139, noise: float = 1.0
) -> CausalData:
    """An IHDP look-alike with known potential outcomes (Hill's response surface B).

    Covariates and treatment assignment depend on ``seed`` only (as in IHDP, where the replications
    share them); ``replication`` draws new outcome coefficients and noise. Treatment is confounded:
    ``n_treated`` units are drawn without replacement with weights ``exp(x @ w)``. Outcomes:
    ``mu0 = exp((z + 0.5) @ beta)``, ``mu1 = z @ beta - omega`` (``z``: centred ``x``) with
    ``beta`` in {0, .1, .2, .3, .4}
    (probabilities .6, .1, .1, .1, .1) and ``omega`` set so that the effect on the treated is 4.
    """
    if not 0 < n_treated < n:
        raise CausalInputError(f"n_treated must be in (0, n={n}), got {n_treated}")
    base = np.random.default_rng([seed, SYNTHETIC_IHDP_VERSION])
    x = _synthetic_ihdp_covariates(base, n)
    weights = 0.6 * base.standard_normal(x.shape[1])
    gumbel = -np.log(-np.log(base.random(n)))
    treated = np.argsort(-(x @ weights + gumbel))[:n_treated]  # Gumbel top-k: weighted sampling
    t = np.zeros(n, dtype=np.int64)
    t[treated] = 1

    rng = np.random.default_rng([seed, SYNTHETIC_IHDP_VERSION, replication])
    beta = rng.choice([0.0, 0.1, 0.2, 0.3, 0.4], size=x.shape[1], p=[0.6, 0.1, 0.1, 0.1, 0.1])
    z = x - x.mean(0)  # centred: standardised continuous columns, binary ones minus their rate
    mu0 = np.exp((z + 0.5) @ beta)
    mu1_raw = z @ beta
    omega = float(np.mean(mu1_raw[t == 1] - mu0[t == 1]) - 4.0)
    mu1 = mu1_raw - omega
    potential = np.column_stack([mu0, mu1])
    y0 = mu0 + noise * rng.standard_normal(n)
    y1 = mu1 + noise * rng.standard_normal(n)
    y = np.where(t == 1, y1, y0)
    y_cf = np.where(t == 1, y0, y1)
    return CausalData(
        x=x, t=t, y=y, y_cf=y_cf, potential_outcomes=potential, name=f"synthetic-ihdp#{replication}"
    )


def write_synthetic_ihdp(
    directory: PathLike, replications: Sequence[int] | int = 10, *, seed: int = 0, n: int = 747
) -> Path:
    """Write ``ihdp_npci_<k>.csv`` files of :func:`make_synthetic_ihdp` in CEVAE's layout."""
    directory = Path(directory)
    ids = range(1, replications + 1) if isinstance(replications, int) else replications
    for k in ids:
        path = directory / f"ihdp_npci_{k}.csv"
        if not path.is_file():  # written once per (seed, version) folder; atomic, so never half there
            write_ihdp_csv(path, make_synthetic_ihdp(k, seed=seed, n=n))
    return directory


# -- multi-valued and dosage treatments --------------------------------------------------------------------
def make_synthetic_categorical(
    n: int = 2000, n_treatments: int = 3, n_covariates: int = 10, *, seed: int = 0, noise: float = 0.5
) -> CausalData:
    """Multi-valued treatments: ``t ~ softmax(x @ W)``, ``mu_k(x) = b(x) + tau_k(x)`` (``tau_0 = 0``)."""
    if n_covariates < 5 or n_treatments < 2:
        raise CausalInputError(
            f"need n_covariates >= 5 and n_treatments >= 2, got {n_covariates} and {n_treatments}"
        )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_covariates))
    assignment = x[:, :3] @ rng.standard_normal((3, n_treatments))
    probs = np.exp(assignment - assignment.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    t = np.array([rng.choice(n_treatments, p=p) for p in probs], dtype=np.int64)
    baseline = np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 + x[:, 2]
    effects = [np.zeros(n)] + [
        k * (1.0 + 0.5 * np.tanh(x[:, 3])) - 0.5 * k * x[:, 4] for k in range(1, n_treatments)
    ]
    potential = baseline[:, None] + np.stack(effects, 1)
    y = potential[np.arange(n), t] + noise * rng.standard_normal(n)
    return CausalData(
        x=x,
        t=t,
        y=y,
        treatment="categorical",
        n_treatments=n_treatments,
        potential_outcomes=potential,
        name="synthetic-categorical",
    )


def make_synthetic_dosage(
    n: int = 2000, n_treatments: int = 3, n_covariates: int = 8, *, seed: int = 0, noise: float = 0.3
) -> CausalData:
    """(treatment, dosage) pairs as TransTEE's dosage setting: each treatment has its own dose curve."""
    if n_covariates < 6 or n_treatments < 1:
        raise CausalInputError(
            f"need n_covariates >= 6 and n_treatments >= 1, got {n_covariates} and {n_treatments}"
        )
    rng = np.random.default_rng(seed)
    x = rng.random((n, n_covariates))
    t = rng.integers(0, n_treatments, size=n)
    dosage = np.clip(rng.beta(2.0, 2.0 + 2.0 * x[:, 0]), 0.0, 1.0)  # confounded by x0

    def response(xs: np.ndarray, ts: np.ndarray, ds: np.ndarray) -> np.ndarray:
        xs = np.asarray(xs, dtype=np.float64)
        ts = np.broadcast_to(np.asarray(ts), (len(xs),)).astype(np.int64)
        ds = np.broadcast_to(np.asarray(ds, dtype=np.float64), (len(xs),))
        shift = 0.2 + 0.6 * xs[:, 1]
        curves = np.stack(
            [
                np.sin(np.pi * ds) * (1.0 + xs[:, 2]),
                2.0 * (ds - shift) ** 2 + xs[:, 3],
                np.exp(-4.0 * (ds - shift) ** 2) * (1.0 + xs[:, 4]),
            ][:n_treatments]
            + [ds * k for k in range(3, n_treatments)],
            1,
        )
        return xs[:, 5] + curves[np.arange(len(xs)), ts]

    y = response(x, t, dosage) + noise * rng.standard_normal(n)
    return CausalData(
        x=x,
        t=t,
        y=y,
        treatment="dosage",
        n_treatments=n_treatments,
        dosage=dosage,
        response=response,
        name="synthetic-dosage",
    )
