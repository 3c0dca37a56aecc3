"""Under /ingest/ every error is JSON {"message": ...}, even the ones Django answers
itself (unknown path, bad Host, a crash); elsewhere Django's HTML pages stay."""

import json

import pytest
from django.test import Client

from tests.conftest import Webhook

pytestmark = pytest.mark.django_db


def identify():
    return {"type": "identify", "messageId": "m-1", "traits": {"email": "ada@example.com"},
            "timestamp": "2026-01-05T10:00:00Z"}


def assert_json_message(response, status):
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_an_unknown_ingest_path_is_a_json_404(webhook):
    assert_json_message(webhook.post(identify(), path="/ingest/segmentt"), 404)
    assert_json_message(webhook.client.get("/ingest/"), 404)


def test_a_disallowed_host_on_the_webhook_is_a_json_400(webhook):
    response = webhook.post(identify(), HTTP_HOST="evil.example.com")
    assert_json_message(response, 400)


def test_the_wrong_method_on_the_webhook_is_a_json_405(client):
    assert_json_message(client.get("/ingest/segment"), 405)


def test_a_crash_in_the_webhook_is_a_json_500_not_an_html_page(api_key, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("ingest.views.record_checked", crash)
    client = Client(raise_request_exception=False)
    body = assert_json_message(Webhook(client, api_key).post(identify()), 500)
    assert "boom" not in body["message"]  # internals are not shown to the client


def test_pages_outside_ingest_keep_django_html_error_pages(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
