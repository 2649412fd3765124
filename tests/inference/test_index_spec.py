"""Which backbone's index serves which version: the settings' bundled backbone before any, a head's own, and a fully
trained ensemble's heaviest member (one member, see index_spec_for for why not each)."""

from __future__ import annotations

import pytest

from inference.ensembles import ensemble_cache_clear
from inference.services.index import index_spec_for
from tests.inference.ensembles import IMAGE_SIZE, MEMBERS, version_factory
from training.ml.embedding import BackboneSpec

pytestmark = pytest.mark.django_db


@pytest.fixture
def version_with_ensemble(make_version, media):
    yield version_factory(make_version)
    ensemble_cache_clear()


def test_an_ensemble_is_indexed_by_its_heaviest_member(version_with_ensemble):
    version = version_with_ensemble()
    heaviest = max(range(len(MEMBERS)), key=lambda i: MEMBERS[i][1])
    spec = index_spec_for(version)
    assert spec == BackboneSpec(
        name=MEMBERS[heaviest][0],
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        source="version",
        version_id=version.pk,
        member=heaviest,
    )
    assert spec.key == f"version:{version.pk}:{heaviest}:{MEMBERS[heaviest][0]}@{IMAGE_SIZE}x{IMAGE_SIZE}"


def test_a_cropping_ensembles_index_embeds_the_crop_its_members_were_trained_on(version_with_ensemble):
    version = version_with_ensemble(center_crop=0.6)
    spec = index_spec_for(version)
    assert spec.crop == 0.6
    assert spec.key.endswith(f"@{IMAGE_SIZE}x{IMAGE_SIZE}-crop0.6")
    assert BackboneSpec.from_dict(spec.as_dict()) == spec


def test_before_any_version_the_bundled_backbone_of_the_settings(settings):
    settings.HEMALOOP_INDEX_BACKBONE = "tf_efficientnet_lite0"
    settings.HEMALOOP_INDEX_IMAGE_SIZE = 224
    settings.HEMALOOP_INDEX_CROP = 0.6
    assert index_spec_for(None).key == "bundled:tf_efficientnet_lite0@224x224-crop0.6"
    assert index_spec_for(None).crop == 0.6
    settings.HEMALOOP_INDEX_CROP = 1.0  # the whole image: the key an index had before the crop existed
    assert index_spec_for(None).key == "bundled:tf_efficientnet_lite0@224x224"
