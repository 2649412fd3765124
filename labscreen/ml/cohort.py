"""Synthetic cohorts: no public CPD cohort with outcomes can be shipped, so tests, the demo and the benchmark use
these. Every table they return has `synthetic=True`, and every page that shows one says so.

The known signal of `synthetic_cohort` (documented in labscreen/ml/README.md): on a latent standard-normal scale,
the variables in SIGNAL are shifted by the given number of standard deviations in malignant cases; every other
parameter is noise, correlated within its analyzer panel (rho 0.5) so that selection has to pick among look-alikes.
Missingness is realistic: the reticulocyte panel is not ordered for 35 % of cases, the CPD panel is missing for
10 %, 2 % of the remaining values are missing at random, and 1 % of cases are nearly empty (over 90 % missing,
which step 1 excludes).
"""

from __future__ import annotations

import numpy as np

from labscreen.ml.table import AGE_COLUMN, SEX_COLUMN, LabTable

# Panels as the Mindray BC-6800 reports them (names as the analyzer writes them, units where it gives them).
CBC = [
    "WBC(10^9/L)", "NEU#(10^9/L)", "LYM#(10^9/L)", "MON#(10^9/L)", "EOS#(10^9/L)", "BAS#(10^9/L)",
    "NEU%(%)", "LYM%(%)", "MON%(%)", "EOS%(%)", "BAS%(%)", "IMG#(10^9/L)", "IMG%(%)",
    "RBC(10^12/L)", "HGB(g/L)", "HCT(%)", "MCV(fL)", "MCH(pg)", "MCHC(g/L)", "RDW-CV(%)", "RDW-SD(fL)",
    "PLT(10^9/L)", "MPV(fL)", "PDW", "PCT(%)", "NRBC#(10^9/L)", "NRBC%(%)",
]  # fmt: skip
RETIC = ["RET#(10^9/L)", "RET%(%)", "IRF(%)", "LFR(%)", "MFR(%)", "HFR(%)", "RHE(pg)"]
CPD = [
    "NEU-X", "NEU-Y", "NEU-Z", "NEU-WX", "NEU-WY", "NEU-WZ",
    "LYM-X", "LYM-Y", "LYM-Z", "LYM-WX", "LYM-WY", "LYM-WZ",
    "MON-X", "MON-Y", "MON-Z", "MON-WX", "MON-WY", "MON-WZ",
    "HFC#(10^9/L)", "HFC%(%)", "InR#(10^9/L)", "InR%(%)", "PLT-I(10^9/L)", "PLT-O(10^9/L)", "IPF(%)",
]  # fmt: skip
PANELS = {"cbc": CBC, "retic": RETIC, "cpd": CPD}
PARAMETERS = CBC + RETIC + CPD  # 59 analyzer parameters; with sex and age, 61 variables
# Shift in malignant cases, in latent standard deviations: the signal a correct study must find.
SIGNAL = {
    "LYM-WX": 0.9,
    "NEU-WY": 0.8,
    "HGB(g/L)": -0.8,
    "PLT(10^9/L)": -0.7,
    "WBC(10^9/L)": 0.6,
    "HFC%(%)": 0.6,
    "IMG%(%)": 0.5,
    "MON-X": 0.4,
    AGE_COLUMN: 0.4,
}
# Latent z -> a plausible value: centre + spread * z (log-normal for counts, so they stay positive).
_SCALE = {
    "WBC(10^9/L)": ("log", 7.0, 0.5),
    "HGB(g/L)": ("lin", 130.0, 20.0),
    "PLT(10^9/L)": ("log", 230.0, 0.5),
    "RBC(10^12/L)": ("lin", 4.5, 0.6),
    "MCV(fL)": ("lin", 90.0, 7.0),
}


def _to_scale(name: str, z: np.ndarray) -> np.ndarray:
    kind, centre, spread = _SCALE.get(name, ("log" if "#" in name else "lin", 1.0 if "#" in name else 50.0, 0.4))
    if name not in _SCALE and "%" in name:
        return np.clip(8.0 + 4.0 * z, 0.0, 100.0)
    if kind == "log":
        return centre * np.exp(spread * z)
    return centre + spread * z


def synthetic_cohort(
    *,
    n_cases: int = 882,
    prevalence: float = 0.45,
    seed: int = 0,
    signal_scale: float = 1.0,
    prefix: str = "SYN",
    outcome: np.ndarray | None = None,
    ids: list[str] | None = None,
) -> LabTable:
    """A cohort of `n_cases` with 59 analyzer parameters, sex and age (61 variables) and a known signal.

    Args:
        n_cases: rows.
        prevalence: share of malignant cases.
        seed: everything is reproducible from it.
        signal_scale: multiplies every SIGNAL shift (0 gives pure noise with the same structure).
        prefix: case ids are f"{prefix}-0001", ...
        outcome: the 0/1 outcomes to generate values for (the demo's cases have theirs); drawn when None.
        ids: case ids instead of the prefix's.
    """
    rng = np.random.default_rng(seed)
    drawn = (rng.random(n_cases) < prevalence).astype(np.int64)
    outcome = drawn if outcome is None else np.asarray(outcome, dtype=np.int64)
    columns = [*PARAMETERS, SEX_COLUMN, AGE_COLUMN]
    latent = np.empty((n_cases, len(PARAMETERS)))
    start = 0
    for names in PANELS.values():
        # rho 0.5 within a panel: a shared panel factor plus individual noise.
        shared = rng.standard_normal((n_cases, 1))
        latent[:, start : start + len(names)] = np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.standard_normal(
            (n_cases, len(names))
        )
        start += len(names)
    values = np.empty((n_cases, len(columns)))
    for j, name in enumerate(PARAMETERS):
        z = latent[:, j] + signal_scale * SIGNAL.get(name, 0.0) * outcome
        values[:, j] = _to_scale(name, z)
    values[:, len(PARAMETERS)] = (rng.random(n_cases) < 0.5).astype(np.float64)  # female 0, male 1
    age_z = rng.standard_normal(n_cases) + signal_scale * SIGNAL[AGE_COLUMN] * outcome
    values[:, len(PARAMETERS) + 1] = np.clip(np.round(55 + 17 * age_z), 18, 99)
    _punch_holes(values, columns, rng)
    return LabTable(
        ids=list(ids) if ids is not None else [f"{prefix}-{i + 1:04d}" for i in range(n_cases)],
        columns=columns,
        values=values,
        outcome=outcome,
        synthetic=True,
        notes={"generator": "synthetic_cohort", "seed": seed, "signal": dict(SIGNAL), "signal_scale": signal_scale},
    )


def _punch_holes(values: np.ndarray, columns: list[str], rng: np.random.Generator) -> None:
    n = len(values)
    index = {name: j for j, name in enumerate(columns)}
    retic = [index[name] for name in RETIC]
    cpd = [index[name] for name in CPD]
    values[np.ix_(rng.random(n) < 0.35, retic)] = np.nan
    values[np.ix_(rng.random(n) < 0.10, cpd)] = np.nan
    values[rng.random(values.shape) < 0.02] = np.nan
    empty = rng.random(n) < 0.01
    keep = [index["WBC(10^9/L)"], index[SEX_COLUMN], index[AGE_COLUMN]]
    for row in np.flatnonzero(empty):
        kept = values[row, keep].copy()
        values[row] = np.nan
        values[row, keep[:1]] = kept[:1]


def noise_cohort(*, n_cases: int = 100, n_variables: int = 1000, seed: int = 0) -> LabTable:
    """Pure noise: standard-normal variables that say nothing about a balanced random outcome. Any AUC clearly above
    0.5 on it is optimism (the leakage test)."""
    rng = np.random.default_rng(seed)
    outcome = np.zeros(n_cases, dtype=np.int64)
    outcome[rng.permutation(n_cases)[: n_cases // 2]] = 1
    return LabTable(
        ids=[f"NOISE-{i + 1:04d}" for i in range(n_cases)],
        columns=[f"noise_{j + 1:04d}" for j in range(n_variables)],
        values=rng.standard_normal((n_cases, n_variables)),
        outcome=outcome,
        categorical=(),
        synthetic=True,
        notes={"generator": "noise_cohort", "seed": seed},
    )
