"""Pure scikit-learn/scipy code of the lab screen (the CBC/CPD malignancy study); never imports Django.

`run_study` runs the published protocol twice, "as published" (imputation, scaling and variable selection fitted on
every case before cross-validation) and leak-free (every step fitted inside each training fold), on a `LabTable`;
`synthetic_cohort` makes a cohort with a known signal for tests, the demo and the benchmark.
"""
