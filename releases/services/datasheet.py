"""DATASHEET.md of a version (after Gebru et al., "Datasheets for Datasets"): deterministic text built only
from values frozen with the version, so every rebuild of its archive writes the same bytes."""

from __future__ import annotations

from datetime import UTC

from annotation.models import FinalMethod
from releases.models import DatasetVersion, Split
from releases.selectors import Balance, LabelSummary, Leakage, VersionDiff

SPLIT_ORDER = (Split.TRAIN, Split.VALIDATION, Split.TEST)
RARE_CLASS_IMAGES = 50
METHOD_NAMES = {
    FinalMethod.AGREEMENT: "agreement of two blind experts",
    FinalMethod.ADJUDICATED: "adjudicated after a disagreement",
    FinalMethod.TRUSTED_IMPORT: "trusted import (reference label)",
}
MANIFEST_COLUMNS_DOC = (
    ("path", "member name of the image in this archive"),
    ("sha256", "SHA-256 of the image bytes (also its file name)"),
    ("split", "train, validation or test"),
    ("label", "cell class code (see taxonomy.json)"),
    ("label_method", "agreement, adjudicated or trusted_import"),
    ("expert_labels", "number of expert labels the image had at freeze time"),
    ("case_id", "pseudonymous case (patient or sample) code; empty if unknown"),
)


def datasheet_render(
    *,
    version: DatasetVersion,
    balance: Balance,
    leakage: Leakage,
    label_summary: LabelSummary,
    parent_diff: VersionDiff | None,
) -> str:
    """The datasheet as Markdown; the same inputs always give the same text."""
    names = {entry["code"]: entry["name"] for entry in version.taxonomy}
    lines = [f"# HemaLoop dataset {version.name}" + (f": {version.title}" if version.title else ""), ""]
    lines += [version.description.strip(), ""]
    if version.notes:
        lines += [version.notes.strip(), ""]
    lines += _summary(version=version, balance=balance, without_case=label_summary.without_case)
    lines += _citation(version=version)
    lines += _composition(version=version, balance=balance)
    lines += _labeling(version=version, label_summary=label_summary, names=names)
    lines += _splits(version=version, leakage=leakage)
    lines += _files()
    if parent_diff is not None:
        lines += _changes(diff=parent_diff, names=names)
    lines += _limitations(version=version, balance=balance, without_case=label_summary.without_case)
    return "\n".join(lines).rstrip() + "\n"


def _summary(*, version: DatasetVersion, balance: Balance, without_case: int) -> list[str]:
    in_taxonomy = len(version.taxonomy)
    return [
        "| | |",
        "|---|---|",
        f"| Version | {version.name} |",
        f"| Frozen | {version.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC |",
        f"| Parent version | {version.parent.name if version.parent_id else 'none (first version)'} |",
        f"| Images | {version.image_count:,} |",
        f"| Classes | {len(balance.rows)} of the {in_taxonomy} in the taxonomy have images |",
        f"| Cases | {version.case_count:,} (plus {without_case:,} images without a case) |",
        f"| Splits | {' · '.join(f'{split.label.lower()} {balance.totals[split]:,}' for split in SPLIT_ORDER)} |",
        f"| Licence | {version.licence or 'not set: ask the data owner before sharing or publishing'} |",
        "",
    ]


def _citation(*, version: DatasetVersion) -> list[str]:
    own = version.citation.strip()
    return [
        "## Citation",
        "",
        *([own, ""] if own else []),
        f"Cite the version ({version.name}) and the SHA-256 of this archive, which is published beside its "
        "download link (an archive cannot contain its own checksum). The same version always yields "
        "byte-identical archive bytes.",
        "",
    ]


def _composition(*, version: DatasetVersion, balance: Balance) -> list[str]:
    lines = [
        "## Composition",
        "",
        "Images per class and split (the share of the split's images in brackets).",
        "",
        "| Class | Code | Train | Validation | Test | Total |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in balance.rows:
        cells = " | ".join(f"{row.counts[split]:,} ({row.shares[split]:.1f}%)" for split in SPLIT_ORDER)
        lines.append(f"| {row.name} | `{row.code}` | {cells} | {row.total:,} |")
    totals = " | ".join(f"{balance.totals[split]:,}" for split in SPLIT_ORDER)
    lines += [f"| **Total** | | {totals} | {balance.total:,} |", "", "### Sources", ""]
    lines += ["| Site | Cases | Images |", "|---|---:|---:|"]
    lines += [f"| {source['site']} | {source['cases']:,} | {source['images']:,} |" for source in version.sources]
    return [*lines, ""]


def _labeling(*, version: DatasetVersion, label_summary: LabelSummary, names: dict[str, str]) -> list[str]:
    lines = [
        "## How the labels were made",
        "",
        "Every image is labeled independently by two hematology experts, who see neither each other's label "
        "nor the model's opinion. Two equal labels become the final label; two different labels go to an "
        "adjudicator, who sees both and records the final class. Corrections never overwrite: they re-open the "
        "image and go through consensus again. Images labeled from a trusted reference source at import keep "
        "that label and may have no expert labels. Images the experts called unclassifiable are not part of "
        "the data set.",
        "",
        "| Final label decided by | Images |",
        "|---|---:|",
    ]
    lines += [f"| {METHOD_NAMES.get(method, method)} | {n:,} |" for method, n in label_summary.methods.items()]
    lines += ["", "| Expert labels per image | Images |", "|---:|---:|"]
    lines += [f"| {count} | {n:,} |" for count, n in label_summary.expert_labels.items()]
    agreement = version.agreement
    lines += ["", "### Agreement between the experts at freeze time", ""]
    if agreement["images_with_two_labels"]:
        kappa = "undefined" if agreement["kappa"] is None else f"{agreement['kappa']:.3f}"
        lines += [
            f"Over all {agreement['images_with_two_labels']:,} images with two expert labels at freeze time "
            f"(not only those in this version): Cohen's kappa {kappa}, observed agreement "
            f"{agreement['observed_agreement']:.3f}.",
            "",
            "| Class | Images with this label from either expert | Both experts agreed |",
            "|---|---:|---:|",
        ]
        for row in agreement["per_class"]:
            if row["images"]:
                lines.append(
                    f"| {names.get(row['code'], row['code'].capitalize())} | {row['images']:,} | "
                    f"{row['agreement']:.3f} |"
                )
    else:
        lines.append("No image had two expert labels at freeze time, so no agreement statistics exist.")
    return [*lines, ""]


def _splits(*, version: DatasetVersion, leakage: Leakage) -> list[str]:
    return [
        "## Splits",
        "",
        f"Stratified by class and grouped by case: all images of a case are in one split, so no patient "
        f"appears in two. Of the images new in a version, {version.test_fraction:.0%} go to test and "
        f"{version.validation_fraction:.0%} of the rest to validation. A case (or an image without a case) "
        "keeps the split it was given in an earlier version, so test images never move into a later "
        "training set.",
        "",
        f"Leakage check: {leakage.cases_in_several_splits} cases in more than one split; "
        f"{leakage.earlier_test_in_training} images of earlier test sets in train or validation.",
        "",
    ]


def _files() -> list[str]:
    return [
        "## Files",
        "",
        "- `images/<split>/<label>/<sha256>.<ext>`: ImageFolder layout, e.g. "
        '`torchvision.datasets.ImageFolder("images/train")`. ImageFolder numbers the classes alphabetically '
        "among the folders present in that split; use `taxonomy.json` for a fixed class index.",
        "- `manifest.csv`, `manifest.jsonl`: one row per image, in archive order, with the columns below. In the "
        "CSV, a cell that a spreadsheet could read as a formula starts with a single quote.",
        *[f"  - `{name}`: {text}" for name, text in MANIFEST_COLUMNS_DOC],
        "- `taxonomy.json`: the cell classes as they were when the version was frozen.",
        "- `SHA256SUMS`: the SHA-256 of every other member; check with `sha256sum -c SHA256SUMS`.",
        "",
        "Members are stored uncompressed, in a fixed order, with fixed dates (1980-01-01) and permissions, so "
        "rebuilding the archive of a version reproduces it byte for byte.",
        "",
    ]


def _changes(*, diff: VersionDiff, names: dict[str, str]) -> list[str]:
    lines = [
        f"## Changes since {diff.old.name}",
        "",
        f"{diff.added:,} images added, {diff.removed:,} removed, {diff.relabeled:,} relabeled, "
        f"{diff.unchanged:,} unchanged.",
        "",
    ]
    if diff.per_class:
        lines += ["| Class | Added | Removed | Relabeled away | Relabeled to |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {names.get(row.code, row.code)} | {row.added:,} | {row.removed:,} | {row.relabeled_away:,} | "
            f"{row.relabeled_to:,} |"
            for row in diff.per_class
        ]
        lines.append("")
    return lines


def _limitations(*, version: DatasetVersion, balance: Balance, without_case: int) -> list[str]:
    items = [line.strip() for line in version.limitations.strip().splitlines() if line.strip()]
    present = {row.code for row in balance.rows}
    missing = [entry["name"] for entry in version.taxonomy if entry["code"] not in present]
    if missing:
        items.append(f"No images of: {', '.join(missing)}.")
    rare = [f"{row.name} ({row.total})" for row in balance.rows if row.total < RARE_CLASS_IMAGES]
    if rare:
        items.append(f"Fewer than {RARE_CLASS_IMAGES} images: {', '.join(rare)}; their metrics will be noisy.")
    empty = [split.label.lower() for split in SPLIT_ORDER if not balance.totals[split]]
    if empty:
        items.append(f"Empty splits: {', '.join(empty)}.")
    if without_case:
        items.append(
            f"{without_case:,} images have no case and are split one by one: if several come from one patient, "
            "that patient may appear in more than one split."
        )
    if len(version.sources) == 1:
        items.append(
            f"All images come from one source ({version.sources[0]['site']}); results may not transfer "
            "to other analyzers, stains or sites."
        )
    items.append("Labels reflect the experts' reading of single-cell images only, without the clinical context.")
    return ["## Known limitations", "", *[f"- {item}" for item in items], ""]
