"""natsite's own system checks: the secrets a production deployment must set.

Django's security.W009 does not catch our development SECRET_KEY (it is long and
varied), and it knows nothing of API_KEY_HASH_SECRET, which keys every stored API key
hash: these checks close that gap."""

from django.conf import settings
from django.core.checks import Tags, Warning, register

# Both development defaults in settings.py start with this; nothing else should.
DEV_SECRET_MARK = "dev-only-"
MIN_HASH_SECRET_CHARS = 32


def _is_dev_default(value) -> bool:
    return str(value).startswith(DEV_SECRET_MARK)


@register(Tags.security, deploy=True)
def check_dev_secrets(app_configs, **kwargs):
    """The development defaults are public (they are in the repository): with DEBUG off
    they would let anyone forge sessions or recompute API key hashes."""
    if settings.DEBUG:
        return []
    warnings = []
    if _is_dev_default(settings.SECRET_KEY):
        warnings.append(
            Warning(
                "SECRET_KEY is the development default while DEBUG is off.",
                hint="Set SECRET_KEY in the environment to a long random value "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))').",
                id="natsite.W001",
            )
        )
    if _is_dev_default(settings.API_KEY_HASH_SECRET) or len(settings.API_KEY_HASH_SECRET) < MIN_HASH_SECRET_CHARS:
        warnings.append(
            Warning(
                "API_KEY_HASH_SECRET is the development default (or shorter than "
                f"{MIN_HASH_SECRET_CHARS} characters) while DEBUG is off.",
                hint="Set API_KEY_HASH_SECRET in the environment to a long random value, once: "
                "changing it later invalidates every API key.",
                id="natsite.W002",
            )
        )
    return warnings


@register(Tags.security)
def check_api_key_hash_secret_is_not_secret_key(app_configs, **kwargs):
    """The API key hash secret is separate so that rotating SECRET_KEY does not break
    integrations; the same value for both defeats that."""
    if settings.API_KEY_HASH_SECRET == settings.SECRET_KEY:
        return [
            Warning(
                "API_KEY_HASH_SECRET equals SECRET_KEY.",
                hint="Give API_KEY_HASH_SECRET its own random value, so rotating SECRET_KEY "
                "keeps Segment's API keys working.",
                id="natsite.W003",
            )
        ]
    return []
