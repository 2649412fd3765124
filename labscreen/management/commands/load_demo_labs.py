"""`manage.py load_demo_labs`: a synthetic lab table for the demo's cases, imported once as the first admin and
marked synthetic. AML and ALL cases are malignant (ICD-10 C92.0, C91.0), the others not (D72.8, D50.9); their values
come from labscreen.ml.cohort.synthetic_cohort, with its documented signal."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Case
from annotation.services.imports.batches import importer_default
from labscreen.ml.cohort import synthetic_cohort
from labscreen.ml.table import table_csv_text
from labscreen.models import LabImport
from labscreen.services.imports import lab_import_run

DEMO_LABS_NAME = "demo-labs.csv (synthetic)"
ICD10 = {"AML": "C92.0", "ALL": "C91.0", "IG": "D72.8", "other": "D50.9", "": "D50.9"}


class Command(BaseCommand):
    help = "Import a synthetic lab table (CBC/CPD) for the demo's cases. Idempotent."

    def handle(self, *args, **options):
        if LabImport.objects.filter(source_name=DEMO_LABS_NAME, status=LabImport.Status.SUCCEEDED).exists():
            self.stdout.write("demo lab table already loaded")
            return
        importer = importer_default()
        if importer is None:
            raise CommandError("No admin user exists: create one first (manage.py create_user).")
        cases = list(Case.objects.order_by("code"))
        if not cases:
            self.stdout.write("no cases yet: load the demo images first")
            return
        outcome = [1 if case.diagnosis in ("AML", "ALL") else 0 for case in cases]
        table = synthetic_cohort(n_cases=len(cases), outcome=outcome, ids=[c.code for c in cases], seed=13)
        text = table_csv_text(table, extra={"icd10": [ICD10.get(c.diagnosis, "D50.9") for c in cases]})
        lab_import = lab_import_run(data=text.encode(), source_name=DEMO_LABS_NAME, created_by=importer, synthetic=True)
        self.stdout.write(f"lab import {lab_import.pk}: {lab_import.summary}")
        if lab_import.status != LabImport.Status.SUCCEEDED:
            raise CommandError("the demo lab table was rejected; see its report on /labscreen/")
