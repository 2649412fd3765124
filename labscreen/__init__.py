"""Floor between inference and cases: the lab screen (CBC/CPD parameters per case, the malignancy study, the active
screen's probability per case). Pure ML code lives in labscreen/ml/, which never imports Django."""
