"""Labeling-queue latency: next-cell and submit under many concurrent annotators, at scale.

Usage: python bench/queue_latency.py [--images 1000000] [--annotators 50] [--seconds 30] [--think-ms 1500]
                                     [--http-annotators 10] [--http-seconds 15]

Fills a throw-away embedded PostgreSQL (the test settings) with N images by one bulk INSERT, then runs
simulated annotators in threads through the service layer (queue_next + annotation_submit), and a
smaller run through real HTTP (a threaded WSGI server on loopback, token auth). Prints p50/p95/p99 of
each operation and, as the baseline measured in the same run, a primary-key fetch of one image.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import multiprocessing
import os
import platform
import random
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"n": len(samples), "p50": q[49], "p95": q[94], "p99": q[98], "mean": statistics.fmean(samples)}


def fill(n_images: int, admin) -> None:
    from django.db import connection

    from annotation.models import ImportBatch

    batch = ImportBatch.objects.create(requested_by=admin, source_name="bench", source_path="-", status="succeeded")
    with connection.cursor() as cursor:
        # md5 twice gives a unique 64-hex-char stand-in for a SHA-256.
        cursor.execute(
            """
            INSERT INTO annotation_cellimage
              (sha256, file, thumbnail, format, width, height, size_bytes, original_name, batch_id,
               final_method, label_status, label_count, priority, created_at)
            SELECT md5(i::text) || md5((i + 1)::text || 'x'), 'images/x.jpg', '', 'JPEG', 360, 363, 20000,
                   'cell_' || i || '.jpg', %s, '', 'needs_labels', 0,
                   CASE WHEN random() < 0.01 THEN random() ELSE 0 END, now()
            FROM generate_series(1, %s) AS i
            """,
            [batch.id, n_images],
        )
        cursor.execute("ANALYZE annotation_cellimage")


def run_service(users, codes, seconds: float, think: float, image_ids: list[int]) -> dict[str, list[float]]:
    from django.db import connection

    from annotation.models import CellClass, CellImage
    from annotation.services.labeling import LabelingError, annotation_submit, queue_next

    classes = {c.code: c for c in CellClass.objects.all()}
    results: dict[str, list[float]] = {"next": [], "submit": [], "pk_fetch": []}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def annotate(user, seed: int) -> None:
        rng = random.Random(seed)
        local: dict[str, list[float]] = {"next": [], "submit": [], "pk_fetch": []}
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                CellImage.objects.get(pk=rng.choice(image_ids))  # baseline: one primary-key fetch
                t1 = time.perf_counter()
                item = queue_next(annotator=user)
                t2 = time.perf_counter()
                local["pk_fetch"].append((t1 - t0) * 1000)
                local["next"].append((t2 - t1) * 1000)
                if item is None:
                    break
                if think:
                    time.sleep(rng.uniform(0.5, 1.5) * think)
                t3 = time.perf_counter()
                try:
                    annotation_submit(image_id=item.image.id, annotator=user, cell_class=classes[rng.choice(codes)])
                except LabelingError:
                    pass
                local["submit"].append((time.perf_counter() - t3) * 1000)
        finally:
            connection.close()
            with lock:
                for key, values in local.items():
                    results[key].extend(values)

    threads = [threading.Thread(target=annotate, args=(user, i)) for i, user in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run_http(users, codes, seconds: float, think: float) -> dict[str, list[float]]:
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.db import connection
    from rest_framework.authtoken.models import Token

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
    server.set_app(WSGIHandler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    results: dict[str, list[float]] = {"next": [], "submit": []}
    lock = threading.Lock()

    def call(token: str, path: str, body: dict | None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()  # None: a GET
        request = urllib.request.Request(
            base + path, data=data, headers={"Authorization": f"Token {token}", "Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    def annotate(user, seed: int) -> None:
        rng = random.Random(seed)
        token = Token.objects.get_or_create(user=user)[0].key
        local: dict[str, list[float]] = {"next": [], "submit": []}
        call(token, "/api/annotation/queue/progress/", None)  # warm-up: the first request imports the URLconf
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            status, item = call(token, "/api/annotation/queue/next/", {})
            local["next"].append((time.perf_counter() - t0) * 1000)
            if status != 200:
                break
            if think:
                time.sleep(rng.uniform(0.5, 1.5) * think)
            t1 = time.perf_counter()
            call(token, "/api/annotation/labels/", {"image": item["image"], "cell_class": rng.choice(codes)})
            local["submit"].append((time.perf_counter() - t1) * 1000)
        with lock:
            for key, values in local.items():
                results[key].extend(values)

    def guarded(user, seed: int) -> None:
        try:
            annotate(user, seed)
        except Exception as exc:  # a broken client must show up in the output, not vanish with its thread
            print(f"http client {user.username} failed: {exc!r}", file=sys.stderr)
        finally:
            connection.close()

    threads = [threading.Thread(target=guarded, args=(user, 1000 + i)) for i, user in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--processes", type=int, default=5, help="client processes the annotators are spread over")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--think-ms",
        type=float,
        default=1500,
        help="mean pause between next-cell and submit (an expert looks at the cell); 0 = stress",
    )
    parser.add_argument("--http-annotators", type=int, default=10)
    parser.add_argument("--http-seconds", type=float, default=15)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from accounts.services import user_create
    from annotation.models import CellClass, CellImage
    from core.roles import Role

    logging.getLogger("django.request").setLevel(logging.ERROR)  # 409s are expected under contention
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 600  # keep connections per thread, as gunicorn workers do
    call_command("migrate", verbosity=0)
    admin, _ = user_create(username="bench-admin", role=Role.ADMIN)
    t0 = time.perf_counter()
    fill(args.images, admin)
    fill_s = time.perf_counter() - t0
    codes = list(CellClass.objects.values_list("code", flat=True))
    image_ids = list(CellImage.objects.order_by("?").values_list("id", flat=True)[:10_000])
    users = [user_create(username=f"bench-ann-{i}", role=Role.ANNOTATOR)[0] for i in range(args.annotators)]
    http_users = [user_create(username=f"bench-http-{i}", role=Role.ANNOTATOR)[0] for i in range(args.http_annotators)]

    # Several processes, as gunicorn workers would be: threads of one process would mostly measure the GIL.
    from django.db import connections

    connections.close_all()  # forked children must open their own connections
    groups = [users[i :: args.processes] for i in range(args.processes)]
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        parts = pool.starmap(
            run_service, [(group, codes, args.seconds, args.think_ms / 1000, image_ids) for group in groups if group]
        )
    service = {key: [v for part in parts for v in part[key]] for key in ("next", "submit", "pk_fetch")}
    http = run_http(http_users, codes, args.http_seconds, args.think_ms / 1000) if args.http_annotators else {}

    figures = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "images": args.images,
        "fill_seconds": round(fill_s, 1),
        "annotators": args.annotators,
        "think_ms": args.think_ms,
        "service": {k: percentiles(v) for k, v in service.items()},
        "http": {k: percentiles(v) for k, v in http.items()},
    }
    base = figures["service"]["pk_fetch"]
    print(
        f"{args.images:,} images filled in {fill_s:.1f}s; "
        f"{args.annotators} annotators in {args.processes} processes, "
        f"think {args.think_ms:.0f} ms"
    )
    print(f"{'operation':<22}{'n':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'p95 / baseline p95':>22}")
    for layer, rows in (("service", figures["service"]), ("http", figures["http"])):
        for op, stats in rows.items():
            if not stats.get("n"):
                continue
            ratio = stats["p95"] / base["p95"] if base.get("n") else float("nan")
            print(
                f"{layer + ' ' + op:<22}{stats['n']:>8}{stats['p50']:>10.2f}{stats['p95']:>10.2f}"
                f"{stats['p99']:>10.2f}{ratio:>22.1f}"
            )
    goal = figures["service"]["next"].get("p95", float("inf"))
    print(f"goal next-cell p95 <= 25 ms: {'met' if goal <= 25 else 'NOT met'} ({goal:.2f} ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
