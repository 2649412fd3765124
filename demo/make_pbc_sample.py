"""Rebuild demo/pbc-sample from a PBC folder (`<label>/<file>.jpg` + manifest.csv): 20 images per class.

Usage: python demo/make_pbc_sample.py SOURCE_FOLDER. The choice is deterministic (lowest SHA-256 first),
so rerunning it on the same source gives the same files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
from collections import defaultdict
from pathlib import Path

PER_CLASS = 20
CASES = [f"DEMO-{number:03d}" for number in range(1, 13)]
# Synthetic: PBC comes from healthy donors; the groups only let the demo show case-level fields.
DIAGNOSES = ["AML", "ALL", "IG", "other"]
TARGET = Path(__file__).resolve().parent / "pbc-sample"

NOTICE = """\
# Attribution

The images in this folder are a small subset of the PBC dataset:

Source: the PBC dataset, Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J.
"A dataset of microscopic peripheral blood cell images for development of automatic recognition
systems", Data in Brief 30 (2020) 105474, Mendeley Data doi:10.17632/snkd93bnjr.1, licence CC BY 4.0.
CellaVision DM96 crops (JPEG, 360×363, some 366×369) from healthy donors, Hospital Clinic of
Barcelona, May-Grünwald-Giemsa stain, labelled by clinical pathologists.

Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/

Changes: {per_class} images per class were selected (the lowest SHA-256 values of each class) and
filed under the HemaLoop taxonomy codes as `<class code>/<original file name>.jpg`; the image files
themselves are unchanged. `cases.csv` assigns synthetic case ids and diagnosis groups for the demo:
they are not part of PBC, whose images come from healthy donors and carry no patient ids.
"""


def sample_make(*, source: Path, target: Path) -> None:
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with (source / "manifest.csv").open(newline="") as manifest:
        for row in csv.DictReader(manifest):
            by_label[row["label"]].append((row["sha256"], row["path"]))
    if target.exists():
        shutil.rmtree(target)
    chosen: list[str] = []
    for label in sorted(by_label):
        for sha256, path in sorted(by_label[label])[:PER_CLASS]:
            data = (source / path).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise SystemExit(f"{path}: the SHA-256 does not match manifest.csv")
            destination = target / label / Path(path).name
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(data)
            chosen.append(f"{label}/{Path(path).name}")
    with (target / "cases.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "case_id", "diagnosis", "analyzer_class", "reference_label"])
        for index, path in enumerate(sorted(chosen)):
            case_index = index % len(CASES)
            writer.writerow([path, CASES[case_index], DIAGNOSES[case_index % len(DIAGNOSES)], "", ""])
    (target / "NOTICE.md").write_text(NOTICE.format(per_class=PER_CLASS), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path, help="folder with <label>/<file>.jpg and manifest.csv")
    args = parser.parse_args()
    sample_make(source=args.source, target=TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
