"""A URLconf without the webhook (tests/test_wsgi_handlers.py)."""

urlpatterns = []
