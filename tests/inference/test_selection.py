"""Active-learning selection on seeded predictions (no training): strategies, class cap, exploration, versions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from annotation.models import Case, CellClass, CellImage, LabelStatus
from annotation.services.labeling import queue_next
from inference.errors import SelectionRefused
from inference.models import Prediction
from inference.selectors import review_list_confident_disagreements
from inference.services.cold_start import queue_priorities_stratified
from inference.services.selection import queue_priorities_update
from tests.factories.annotation import image_make
from training.ml.uncertainty import select_for_queue
from training.models import ModelVersion
from training.services.versions import model_version_activate

pytestmark = pytest.mark.django_db

ACTIVE = ModelVersion.Status.ACTIVE


def _priorities() -> dict[int, float]:
    return dict(CellImage.objects.values_list("id", "priority"))


def test_queue_next_serves_the_smallest_margin_first(make_version, predict, batch, annotator):
    version = make_version(ACTIVE)
    sure, unsure, middling = (image_make(batch=batch) for _ in range(3))
    predict(version, sure, {"neutrophil": 0.9, "lymphocyte": 0.05})
    predict(version, unsure, {"neutrophil": 0.46, "lymphocyte": 0.44})
    predict(version, middling, {"neutrophil": 0.6, "lymphocyte": 0.3})

    chosen = queue_priorities_update(model_version=version, strategy="margin", exploration=0.0, max_class_share=1.0)

    assert chosen == [unsure.pk, middling.pk, sure.pk]
    assert queue_next(annotator=annotator).image.pk == unsure.pk


@pytest.mark.parametrize(("strategy", "first"), [("margin", "a"), ("entropy", "b"), ("least_confidence", "c")])
def test_each_uncertainty_measure_ranks_its_own_most_uncertain_image_first(
    make_version, predict, batch, strategy, first
):
    version = make_version(ACTIVE)
    images = {name: image_make(batch=batch) for name in "abc"}
    # a: tiny margin; b: spread thin over all classes (highest entropy); c: lowest top-1 probability.
    predict(version, images["a"], {"neutrophil": 0.45, "lymphocyte": 0.44, "monocyte": 0.11})
    predict(version, images["b"], {"neutrophil": 0.40})
    predict(version, images["c"], {"neutrophil": 0.30, "lymphocyte": 0.25, "monocyte": 0.25, "eosinophil": 0.20})

    chosen = queue_priorities_update(model_version=version, strategy=strategy, exploration=0.0, max_class_share=1.0)

    assert chosen[0] == images[first].pk
    assert _priorities()[images[first].pk] == max(_priorities().values())


def test_no_predicted_class_takes_more_than_its_share(make_version, predict, batch):
    version = make_version(ACTIVE)
    predicted = {}
    # The ten most uncertain are all neutrophils; lymphocytes and eosinophils are less uncertain.
    for i in range(10):
        predicted[image_make(batch=batch).pk] = "neutrophil"
        predict(version, CellImage.objects.latest("id"), {"neutrophil": 0.5 + i / 200, "lymphocyte": 0.45})
    for code, base in (("lymphocyte", 0.6), ("eosinophil", 0.7)):
        for i in range(5):
            image = image_make(batch=batch)
            predicted[image.pk] = code
            predict(version, image, {code: base + i / 100, "monocyte": 0.3 - i / 100})

    chosen = queue_priorities_update(model_version=version, exploration=0.0, max_class_share=0.4, top_n=10)

    assert len(chosen) == 10
    assert Counter(predicted[pk] for pk in chosen) == {"neutrophil": 4, "lymphocyte": 4, "eosinophil": 2}
    assert chosen[:4] == list(predicted)[:4]  # within the cap, the most uncertain neutrophils first
    assert {pk for pk, p in _priorities().items() if p > 0} == set(chosen)


def test_exploration_share_comes_from_beyond_the_uncertain_head(make_version, predict, batch):
    version = make_version(ACTIVE)
    ordered = []  # most uncertain first
    for i in range(20):
        image = image_make(batch=batch)
        ordered.append(image.pk)
        predict(version, image, {"neutrophil": 0.5 + i / 50, "lymphocyte": 0.45 - i / 50})

    chosen = queue_priorities_update(model_version=version, exploration=0.3, max_class_share=1.0, top_n=10, seed=3)

    assert len(chosen) == 10
    head = set(ordered[:7])
    explored = [pk for pk in chosen if pk not in head]
    assert {pk for pk in chosen if pk in head} == head
    assert len(explored) == 3
    assert len(set(chosen)) == 10
    assert set(explored) != set(ordered[7:10])  # drawn at random, not simply the next most uncertain
    assert chosen.index(explored[0]) < 7  # spread among the picks, not all left for the end
    assert sorted(p for p in _priorities().values() if p > 0) == [float(n) for n in range(1, 11)]


def test_activating_a_newer_version_replaces_the_old_priorities(make_version, predict, batch, admin_user, annotator):
    old = make_version(ACTIVE)
    new = make_version()
    old_pick, new_pick, only_old = (image_make(batch=batch) for _ in range(3))
    predict(old, old_pick, {"neutrophil": 0.5, "lymphocyte": 0.49})
    predict(old, new_pick, {"neutrophil": 0.9})
    predict(old, only_old, {"neutrophil": 0.6, "lymphocyte": 0.3})
    predict(new, old_pick, {"lymphocyte": 0.95})
    predict(new, new_pick, {"neutrophil": 0.5, "lymphocyte": 0.48})
    assert queue_priorities_update(model_version=old, exploration=0.0, max_class_share=1.0)[0] == old_pick.pk

    model_version_activate(version=new, actor=admin_user)
    chosen = queue_priorities_update(model_version=new, exploration=0.0, max_class_share=1.0)

    assert chosen == [new_pick.pk, old_pick.pk]
    assert _priorities()[only_old.pk] == 0.0  # scored by the retired version only: no priority left over
    assert queue_next(annotator=annotator).image.pk == new_pick.pk
    with pytest.raises(SelectionRefused):
        queue_priorities_update(model_version=old)


def test_settings_give_the_defaults_and_bad_arguments_are_refused(make_version, predict, batch, settings):
    version = make_version(ACTIVE)
    images = [image_make(batch=batch) for _ in range(5)]
    for i, image in enumerate(images):  # the later the image, the less confident (margins go the other way)
        predict(version, image, {"neutrophil": 0.7 - i / 20, "lymphocyte": 0.05 + i / 100})
    settings.HEMALOOP_AL_TOP_N = 2
    settings.HEMALOOP_AL_EXPLORATION = 0.0
    settings.HEMALOOP_AL_MAX_CLASS_SHARE = 1.0
    settings.HEMALOOP_AL_STRATEGY = "least_confidence"

    chosen = queue_priorities_update(model_version=version)

    assert chosen == [images[4].pk, images[3].pk]
    with pytest.raises(SelectionRefused):
        queue_priorities_update(model_version=version, strategy="vibes")
    with pytest.raises(SelectionRefused):
        queue_priorities_update(model_version=make_version())  # a candidate never orders the queue


@pytest.mark.parametrize("strategy", ["margin", "entropy", "least_confidence", "random"])
def test_the_queue_chooses_what_the_benchmarks_selection_chooses(make_version, predict, batch, strategy):
    version = make_version(ACTIVE)
    codes = list(CellClass.objects.order_by("order").values_list("code", flat=True))
    rng = np.random.default_rng(11)
    for _ in range(40):
        named = rng.choice(codes, 3, replace=False)
        predict(version, image_make(batch=batch), dict(zip(named, rng.dirichlet(np.ones(4))[:3], strict=False)))
    options = {"exploration": 0.3, "max_class_share": 0.25, "seed": 5}

    chosen = queue_priorities_update(model_version=version, strategy=strategy, top_n=16, **options)

    rows = list(
        Prediction.objects.filter(model_version=version, image__label_status=LabelStatus.NEEDS_LABELS).order_by(
            "image_id"
        )
    )
    picks = select_for_queue(np.array([row.probabilities for row in rows]), 16, strategy, **options)
    assert len(chosen) == 16
    assert chosen == [rows[i].image_id for i in picks]


def test_review_list_shows_confident_disagreements_only(make_version, predict, batch):
    version = make_version()
    disagreement = image_make(batch=batch, final_label="neutrophil")
    unsure_disagreement = image_make(batch=batch, final_label="neutrophil")
    agreement = image_make(batch=batch, final_label="lymphocyte")
    unlabeled = image_make(batch=batch)
    predict(version, disagreement, {"lymphocyte": 0.95})
    predict(version, unsure_disagreement, {"lymphocyte": 0.8})
    predict(version, agreement, {"lymphocyte": 0.99})
    predict(version, unlabeled, {"lymphocyte": 0.99})

    rows = list(review_list_confident_disagreements(model_version=version, min_confidence=0.9))

    assert [row.image_id for row in rows] == [disagreement.pk]
    assert rows[0].predicted_class.code == "lymphocyte"
    assert rows[0].image.final_label.code == "neutrophil"


def test_the_stratified_cold_start_spreads_the_first_picks_across_cases(batch, annotator):
    cases = [Case.objects.create(code=f"case-{n}") for n in range(3)]
    case_of = {}
    for case, count in zip(cases, (6, 3, 1), strict=True):
        for _ in range(count):
            case_of[image_make(batch=batch, case=case).pk] = case.pk
    image_make(batch=batch, case=cases[0], final_label="neutrophil")  # final: never queued

    chosen = queue_priorities_stratified(seed=7)

    assert sorted(chosen) == sorted(case_of)
    assert len({case_of[pk] for pk in chosen[:3]}) == 3
    assert len({case_of[pk] for pk in chosen[3:5]}) == 2  # the single-image case is used up, the others alternate
    assert chosen == queue_priorities_stratified(seed=7)
    assert queue_next(annotator=annotator).image.pk == chosen[0]
