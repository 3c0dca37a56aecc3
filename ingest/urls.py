from django.urls import re_path

from ingest import views

urlpatterns = [
    re_path(r"^ingest/segment/?$", views.SegmentWebhook.as_view(), name="segment-webhook"),
]
