"""Import throughput: import_batch_process on a folder of images against reading and SHA-256-hashing the same files.

Usage: python bench/import_speed.py FOLDER [--limit N] [--workers N] [--tracemalloc] [--json OUT]
Runs on the test settings (a throw-away embedded PostgreSQL and a temporary MEDIA_ROOT).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="flat or ImageFolder (<label>/<file>) folder of images")
    parser.add_argument("--limit", type=int, help="import only the first N images (sorted by path)")
    parser.add_argument("--workers", type=int, help="decoder threads (default: the service's own default)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slower)")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from accounts.services import user_create
    from annotation.services.imports.batches import import_batch_create
    from annotation.services.imports.runner import import_batch_process
    from annotation.services.validation import entry_is_companion
    from core.roles import Role

    if args.workers:
        settings.HEMALOOP_IMPORT_WORKERS = args.workers
    call_command("migrate", verbosity=0)
    admin, _ = user_create(username="bench-admin", role=Role.ADMIN)

    folder = args.folder.resolve()
    files = sorted(
        path for path in folder.rglob("*") if path.is_file() and not entry_is_companion(str(path.relative_to(folder)))
    )
    scratch = Path(tempfile.mkdtemp(prefix="hemaloop-bench-"))
    try:
        if args.limit:
            # A folder holding just the first N images, so the import reads exactly what the baseline reads.
            files = files[: args.limit]
            subset = scratch / folder.name
            for path in files:
                target = subset / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            folder, files = subset, sorted(subset.rglob("*.*"))
        total_bytes = sum(path.stat().st_size for path in files)

        _read_and_hash(files)  # warm the page cache, so both timed passes read from memory
        baseline_s = min(_timed(_read_and_hash, files) for _ in range(3))
        decode_s = _timed(_read_hash_decode, files)

        if args.tracemalloc:
            tracemalloc.start()
        batch = import_batch_create(created_by=admin, source=folder, source_name=folder.name, enqueue=False)
        started = time.perf_counter()
        batch = import_batch_process(batch=batch)
        import_s = time.perf_counter() - started
        traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
        tracemalloc.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    count = len(files)
    figures = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "folder": str(args.folder),
        "images": count,
        "megabytes": round(total_bytes / 1e6, 1),
        "workers": args.workers or f"service default, min(4, {os.cpu_count()} cores)",
        "batch": {key: str(getattr(batch, key)) for key in ("status", "imported", "duplicates", "rejected", "skipped")},
        "import_s": round(import_s, 2),
        "import_images_per_s": round(count / import_s, 1),
        "import_mb_per_s": round(total_bytes / 1e6 / import_s, 2),
        "baseline_read_sha256_images_per_s": round(count / baseline_s, 1),
        "baseline_read_sha256_mb_per_s": round(total_bytes / 1e6 / baseline_s, 1),
        "ratio_to_baseline": round(baseline_s / import_s, 4),
        "reference_read_sha256_decode_images_per_s": round(count / decode_s, 1),
        "ratio_to_read_sha256_decode": round(decode_s / import_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_traced_python_mb": round(traced_peak / 1e6, 1) if traced_peak is not None else None,
    }
    for key, value in figures.items():
        print(f"{key:44} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _timed(function, files: list[Path]) -> float:
    started = time.perf_counter()
    function(files)
    return time.perf_counter() - started


def _read_and_hash(files: list[Path]) -> None:
    for path in files:
        hashlib.sha256(path.read_bytes()).hexdigest()


def _read_hash_decode(files: list[Path]) -> None:
    """A second reference: the work no import can skip (read, hash, decode every pixel), on one thread."""
    from PIL import Image

    for path in files:
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            image.load()


if __name__ == "__main__":
    main()
