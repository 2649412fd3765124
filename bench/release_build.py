"""Archive build speed: cut a dataset version of a folder of labeled images and build its zip, against `zip -0 -r`.

Usage: python bench/release_build.py FOLDER [--limit N] [--repeat N] [--json OUT]
FOLDER is an ImageFolder tree (<label>/<file>); its images are imported as trusted labels in three parts,
a version cut after each: v1 holds a quarter of them, v2 half, v3 all. v3's archive is timed; the Python
memory peaks of building v2 and v3 (both with a parent to diff against) show whether memory grows with
the number of images. Runs on the test settings (a
throw-away embedded PostgreSQL and a temporary MEDIA_ROOT). The baseline packs the same stored files with
Info-ZIP's `zip -0 -q -r` (Debian package `zip`) in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER_IMAGES = 42_386  # Park et al. (2024)


class RssSampler:
    """Peak resident memory of this process while a block runs, sampled from /proc every 2 ms."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.before = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self.before = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="ImageFolder tree (<label>/<file>) of labeled images")
    parser.add_argument("--limit", type=int, help="use only the first N images (sorted by path)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the build and of the baseline (best)")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    args = parser.parse_args()

    zip_binary = shutil.which("zip")
    if zip_binary is None:
        print(
            "zip is NOT installed: the baseline cannot run (Debian: apt-get install zip). "
            "Only the build itself is measured.",
            file=sys.stderr,
        )

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
    from releases.models import DatasetArchive
    from releases.services import zipstream
    from releases.services.archive import archive_write
    from releases.services.archive_request import archive_build_start
    from releases.services.versions import dataset_version_create

    call_command("migrate", verbosity=0)
    admin, _ = user_create(username="bench-admin", role=Role.ADMIN)

    folder = args.folder.resolve()
    files = sorted(
        path for path in folder.rglob("*") if path.is_file() and not entry_is_companion(str(path.relative_to(folder)))
    )
    if args.limit:
        files = files[: args.limit]
    scratch = Path(tempfile.mkdtemp(prefix="hemaloop-bench-"))
    try:
        # Three imports from copies of the files: a quarter, another quarter, then the rest.
        parts = []
        quarter, half = len(files) // 4, len(files) // 2
        for name, part in (("first", files[:quarter]), ("second", files[quarter:half]), ("rest", files[half:])):
            root = scratch / name / folder.name
            for path in part:
                target = root / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            parts.append(root)

        import_s = 0.0
        versions = []
        for root in parts:
            started = time.perf_counter()
            batch = import_batch_create(
                created_by=admin, source=root, source_name=root.name, trusted=True, enqueue=False
            )
            import_batch_process(batch=batch)
            import_s += time.perf_counter() - started
            started = time.perf_counter()
            versions.append(dataset_version_create(created_by=admin, title="bench"))
            cut_s = time.perf_counter() - started
        _, half_version, version = versions

        media = Path(settings.MEDIA_ROOT)
        stored = sorted((media / "images").rglob("*.*"))
        stored_bytes = sum(path.stat().st_size for path in stored)
        _read_all(stored)  # warm the page cache, so the build and the baseline both read from memory

        # As a researcher asks for it: the job row, then the task (eager on the test settings) claims it,
        # heartbeats, writes a temporary file, renames it into place and publishes the SHA-256.
        with RssSampler() as rss:
            started = time.perf_counter()
            archive_build_start(version=version, requested_by=admin)
            first_build_s = time.perf_counter() - started
        archive = DatasetArchive.objects.get(version=version)
        assert archive.status == DatasetArchive.Status.SUCCEEDED, archive.error
        archive_dir = (media / archive.file_name).parent
        # Further runs write the same bytes to a scratch file beside it, alternating with the baseline, so
        # both see the same load on a shared machine.
        build_times = [first_build_s]
        baseline_times = []
        build_cpu, baseline_cpu = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryFile(dir=archive_dir) as out:
                started, cpu = time.perf_counter(), time.process_time()
                result = archive_write(version=version, out=out)
                build_times.append(time.perf_counter() - started)
                build_cpu.append(time.process_time() - cpu)
            assert result.sha256 == archive.sha256, "every build must give the published bytes"
            if zip_binary:
                target = scratch / "baseline.zip"
                target.unlink(missing_ok=True)
                started, cpu = time.perf_counter(), _children_cpu()
                subprocess.run([zip_binary, "-0", "-q", "-r", str(target), "images"], cwd=media, check=True)
                baseline_times.append(time.perf_counter() - started)
                baseline_cpu.append(_children_cpu() - cpu)

        # Python's memory peak while building v2 and v3; then again with zipfile's per-member records moved to
        # disk from the 512th member on instead of the 8192nd, which leaves nothing that grows with the images.
        traced_peaks: dict[str, dict[int, int]] = {"default": {}, "spooled_from_512": {}}
        for setting, block in (("default", zipstream.CENTRAL_DIRECTORY_BLOCK), ("spooled_from_512", 512)):
            zipstream.CENTRAL_DIRECTORY_BLOCK, saved = block, zipstream.CENTRAL_DIRECTORY_BLOCK
            for traced in (half_version, version):
                tracemalloc.start()
                with tempfile.TemporaryFile(dir=archive_dir) as out:
                    archive_write(version=traced, out=out)
                traced_peaks[setting][traced.image_count] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            zipstream.CENTRAL_DIRECTORY_BLOCK = saved
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    count = version.image_count
    build_s = min(build_times)
    archive_mb = archive.size_bytes / 1e6
    figures = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "folder": str(args.folder),
        "images": count,
        "stored_megabytes": round(stored_bytes / 1e6, 1),
        "archive_megabytes": round(archive_mb, 1),
        "archive_sha256": archive.sha256,
        "import_s": round(import_s, 2),
        "cut_version_s": round(cut_s, 2),  # v3, all images
        "build_s_best": round(build_s, 3),
        "build_s_runs": [round(t, 3) for t in build_times],
        # Both rates count the image bytes packed (the payload), not the archive's own headers and manifests.
        "build_mb_per_s": round(stored_bytes / 1e6 / build_s, 1),
        "build_images_per_s": round(count / build_s, 1),
        "baseline": "zip -0 -q -r (Info-ZIP)" if zip_binary else "zip NOT installed (apt-get install zip)",
        "baseline_s_best": round(min(baseline_times), 3) if baseline_times else None,
        "baseline_mb_per_s": round(stored_bytes / 1e6 / min(baseline_times), 1) if baseline_times else None,
        "ratio_to_baseline": round(min(baseline_times) / build_s, 3) if baseline_times else None,
        # CPU seconds (user + system) of the same runs: what the work costs, whatever else shares the machine.
        "build_cpu_s_best": round(min(build_cpu), 3),
        "baseline_cpu_s_best": round(min(baseline_cpu), 3) if baseline_cpu else None,
        "ratio_to_baseline_cpu": round(min(baseline_cpu) / min(build_cpu), 3) if baseline_cpu else None,
        "extrapolated_42k_build_s": round(build_s / count * PAPER_IMAGES, 1),
        "extrapolated_42k_cut_s": round(cut_s / count * PAPER_IMAGES, 1),
        "build_peak_rss_growth_mb": round((rss.peak - rss.before) / 1e6, 1),
        "process_rss_before_build_mb": round(rss.before / 1e6, 1),
        "build_peak_traced_python_mb_by_images": {
            setting: {n: round(peak / 1e6, 2) for n, peak in peaks.items()} for setting, peaks in traced_peaks.items()
        },
    }
    for key, value in figures.items():
        print(f"{key:32} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_all(files: list[Path]) -> None:
    for path in files:
        path.read_bytes()


if __name__ == "__main__":
    main()
