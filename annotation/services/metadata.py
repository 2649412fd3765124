"""Per-file metadata of an import: the optional CSV, folder labels or case ids, matched to taxonomy codes."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from annotation.models import Case, CellClass
from annotation.services.sources import SourceInvalid
from annotation.services.validation import FileRejected, megabytes

CSV_COLUMNS = ("file", "case_id", "diagnosis", "analyzer_class", "reference_label")
DIAGNOSES = {choice.value.lower(): choice.value for choice in Case.Diagnosis}
CASE_CODE_MAX = Case._meta.get_field("code").max_length


@dataclass(frozen=True)
class CsvRow:
    line: int
    file: str = ""
    case_id: str = ""
    diagnosis: str = ""
    analyzer_class: str = ""
    reference_label: str = ""


@dataclass(frozen=True)
class FileMeta:
    case_code: str = ""
    diagnosis: str = ""
    analyzer_class: CellClass | None = None
    reference_label: CellClass | None = None


@dataclass
class ImportPlan:
    # Entry name -> its metadata; a file rejected before being read is in `rejected` instead.
    files: dict[str, FileMeta]
    # Entry name -> why it is rejected (its CSV row or folder contradicts itself or the taxonomy).
    rejected: dict[str, str]
    # CSV rows that name no file of the source; reported so a typo does not go unnoticed.
    unmatched: list[CsvRow]


def csv_rows_read(*, path: Path, max_bytes: int) -> list[CsvRow]:
    """Parse the metadata CSV. Values are kept verbatim as text (a leading '=' is data, never a formula)."""
    size = path.stat().st_size
    if size > max_bytes:
        raise SourceInvalid(f"the CSV is {megabytes(size)}, larger than the limit of {megabytes(max_bytes)}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceInvalid("the CSV is not UTF-8 text") from None
    # Spreadsheets in many locales save ';' or tab separated "CSV"; the header line tells which.
    first_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)
    rows: list[CsvRow] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        header = [column.strip().lower().replace(" ", "_") for column in next(reader, [])]
        unknown = [column for column in header if column not in CSV_COLUMNS]
        if "file" not in header or unknown:
            raise SourceInvalid(
                f"the CSV header must name the columns {', '.join(CSV_COLUMNS)} (only 'file' is required); "
                f"found: {', '.join(header) or 'nothing'}"
            )
        for values in reader:
            if not any(value.strip() for value in values):
                continue
            cells = dict(zip(header, (value.strip() for value in values), strict=False))
            rows.append(CsvRow(line=reader.line_num, **cells))
    except csv.Error as exc:
        raise SourceInvalid(f"the CSV cannot be parsed: {exc}") from None
    return rows


def import_plan_build(
    *,
    names: list[str],
    rows: list[CsvRow],
    classes: dict[str, CellClass],
    case_from_folder: bool,
    unsafe: frozenset[str] = frozenset(),
) -> ImportPlan:
    """Decide each file's case and labels from its folder and its CSV row, or why it is rejected.

    The folder that directly holds a file is its label (ImageFolder layout) or, with case_from_folder,
    its case id. A zip of a flat folder ("images/a.jpg") has one folder that is no class code: it is a
    wrapper, not a label. Names in unsafe (rejected anyway, e.g. '../x.jpg') do not count for that.
    """
    by_path: dict[str, list[CsvRow]] = defaultdict(list)
    for row in rows:
        by_path[_path_normalize(row.file)].append(row)
    matches: dict[str, list[CsvRow]] = {}
    matched_by: dict[int, list[str]] = defaultdict(list)  # CSV line -> the files it matched
    for name in names:
        parts = _path_normalize(name).split("/")
        # The CSV may give the full path or any trailing part of it (down to the bare file name).
        for start in range(len(parts)):
            found = by_path.get("/".join(parts[start:]))
            if found:
                matches[name] = found
                for row in found:
                    matched_by[row.line].append(name)
                break

    safe_names = [name for name in names if name not in unsafe]
    wrapper = None if case_from_folder else _wrapper_folder(names=safe_names, classes=classes)
    files: dict[str, FileMeta] = {}
    rejected: dict[str, str] = {}
    for name in names:
        found = matches.get(name, [])
        if len(found) > 1:
            rejected[name] = f"listed more than once in the CSV (lines {', '.join(str(row.line) for row in found)})"
        elif found and len(matched_by[found[0].line]) > 1:
            rejected[name] = (
                f"CSV line {found[0].line} ({found[0].file}) matches several files; give the path inside the upload"
            )
        else:
            folder = _parent_folder(name)
            if folder == wrapper:
                folder = ""
            try:
                files[name] = _file_meta(
                    row=found[0] if found else None, folder=folder, classes=classes, case_from_folder=case_from_folder
                )
            except FileRejected as exc:
                rejected[name] = str(exc)
    unmatched = [row for row in rows if not matched_by[row.line]]
    return ImportPlan(files=files, rejected=rejected, unmatched=unmatched)


def label_normalize(label: str) -> str:
    """'Band neutrophil' and 'band-neutrophil' name the code band_neutrophil."""
    return label.strip().lower().replace("-", "_").replace(" ", "_")


def _file_meta(*, row: CsvRow | None, folder: str, classes: dict[str, CellClass], case_from_folder: bool) -> FileMeta:
    """The file's case and labels; FileRejected says why its folder or CSV row cannot be used."""
    case_code = row.case_id if row else ""
    folder_label: CellClass | None = None
    if folder and case_from_folder:
        if case_code and case_code != folder:
            raise FileRejected(f"CSV line {row.line} gives case {case_code!r} but the file is in folder {folder!r}")
        case_code = folder
    elif folder:
        folder_label = classes.get(label_normalize(folder))
        if folder_label is None:
            raise FileRejected(
                f"folder {folder!r} is not a cell class code (expected one of: {', '.join(sorted(classes))})"
            )

    reference_label = folder_label
    analyzer_class = None
    diagnosis = ""
    if row:
        if row.reference_label:
            reference_label = classes.get(label_normalize(row.reference_label))
            if reference_label is None:
                raise FileRejected(f"unknown reference_label {row.reference_label!r} on CSV line {row.line}")
            if folder_label is not None and reference_label != folder_label:
                raise FileRejected(
                    f"CSV line {row.line} gives reference_label {row.reference_label!r} "
                    f"but the file is in folder {folder!r}"
                )
        if row.analyzer_class:
            analyzer_class = classes.get(label_normalize(row.analyzer_class))
            if analyzer_class is None:
                raise FileRejected(f"unknown analyzer_class {row.analyzer_class!r} on CSV line {row.line}")
        if row.diagnosis:
            diagnosis = DIAGNOSES.get(row.diagnosis.lower(), "")
            if not diagnosis:
                raise FileRejected(
                    f"unknown diagnosis {row.diagnosis!r} on CSV line {row.line} (expected AML, ALL, IG or other)"
                )
            if not case_code:
                raise FileRejected(f"CSV line {row.line} gives a diagnosis but no case_id")
    if len(case_code) > CASE_CODE_MAX:
        raise FileRejected(f"case id is longer than {CASE_CODE_MAX} characters")
    return FileMeta(
        case_code=case_code, diagnosis=diagnosis, analyzer_class=analyzer_class, reference_label=reference_label
    )


def _path_normalize(path: str) -> str:
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def _parent_folder(name: str) -> str:
    parts = _path_normalize(name).split("/")
    return parts[-2] if len(parts) > 1 else ""


def _wrapper_folder(*, names: list[str], classes: dict[str, CellClass]) -> str | None:
    folders = {_parent_folder(name) for name in names}
    if len(folders) != 1:
        return None
    (folder,) = folders
    if not folder or any(len(_path_normalize(name).split("/")) != 2 for name in names):
        return None
    return None if label_normalize(folder) in classes else folder
