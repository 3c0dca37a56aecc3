"""
WSGI config for natsite project.

It exposes the WSGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import os

import django
from django.urls import get_resolver

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'natsite.settings')
django.setup(set_prefix=False)  # what get_wsgi_application() does first

from natsite.gc_settle import freeze_live_objects  # noqa: E402
from natsite.handlers import Application  # noqa: E402

# Django's handler, and a leaner one for the Segment webhook (natsite/handlers.py).
application = Application()
get_resolver().url_patterns  # the URL patterns load now rather than on the first request
freeze_live_objects()
