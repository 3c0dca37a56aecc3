"""
WSGI config for natsite project.

It exposes the WSGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from natsite.gc_settle import freeze_live_objects

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'natsite.settings')

application = get_wsgi_application()
get_resolver().url_patterns  # the URL patterns load now rather than on the first request
freeze_live_objects()
