"""Annotation API routes under /api/annotation/."""

from django.urls import path

from annotation.api import images, labeling

app_name = "annotation_api"
urlpatterns = [
    path("taxonomy/", images.TaxonomyListApi.as_view(), name="taxonomy"),
    path("images/", images.ImageListApi.as_view(), name="image_list"),
    path("images/<int:image_id>/", images.ImageDetailApi.as_view(), name="image_detail"),
    path("images/<int:image_id>/file/", images.ImageFileApi.as_view(), name="image_file"),
    path("images/<int:image_id>/history/", labeling.ImageHistoryApi.as_view(), name="image_history"),
    path("images/<int:image_id>/reopen/", labeling.ReopenApi.as_view(), name="image_reopen"),
    path("batches/", images.BatchListApi.as_view(), name="batch_list"),
    path("batches/<int:batch_id>/", images.BatchDetailApi.as_view(), name="batch_detail"),
    path("batches/<int:batch_id>/items/", images.BatchItemListApi.as_view(), name="batch_items"),
    path("batches/<int:batch_id>/progress/", images.BatchProgressApi.as_view(), name="batch_progress"),
    # Labeling (annotators): only ever their own labels, and cells by their public id only.
    path("cells/<str:public_id>/file/", images.CellFileApi.as_view(), name="cell_file"),
    path("queue/next/", labeling.NextCellApi.as_view(), name="queue_next"),
    path("queue/skip/", labeling.SkipApi.as_view(), name="queue_skip"),
    path("queue/progress/", labeling.ProgressApi.as_view(), name="queue_progress"),
    path("labels/", labeling.LabelListCreateApi.as_view(), name="labels"),
    path("labels/undo/", labeling.UndoApi.as_view(), name="label_undo"),
    path("labels/flag/", labeling.FlagApi.as_view(), name="label_flag"),
    # Consensus and agreement (adjudicators, researchers, admins).
    path("consensus/", labeling.ConsensusListApi.as_view(), name="consensus_list"),
    path("consensus/<int:image_id>/resolve/", labeling.ConsensusResolveApi.as_view(), name="consensus_resolve"),
    path("agreement/", labeling.AgreementApi.as_view(), name="agreement"),
    path("agreement/heatmap.png", labeling.AgreementHeatmapApi.as_view(), name="agreement_heatmap"),
]
