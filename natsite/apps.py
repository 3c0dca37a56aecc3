from django.apps import AppConfig


class NatsiteConfig(AppConfig):
    """The project itself as an app: its system checks (natsite/checks.py)."""

    name = "natsite"
    verbose_name = "natsite"

    def ready(self):
        from natsite import checks  # noqa: F401  (registers the checks)
