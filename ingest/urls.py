from django.urls import path, re_path

from ingest import settings_views, views

urlpatterns = [
    re_path(r"^ingest/segment/?$", views.SegmentWebhook.as_view(), name="segment-webhook"),
    path("settings/api-keys/", settings_views.api_keys, name="api-keys"),
    path("settings/api-keys/rotate/", settings_views.rotate, name="api-key-rotate"),
    path("settings/api-keys/<int:key_id>/revoke/", settings_views.revoke, name="api-key-revoke"),
    path("settings/api-keys/signing-secret/", settings_views.generate_signing_secret, name="signing-secret-set"),
    path("settings/api-keys/signing-secret/clear/", settings_views.remove_signing_secret, name="signing-secret-clear"),
]
