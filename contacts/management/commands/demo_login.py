"""Used by bin/serve: makes sure the demo workspace, an admin login and an API key
exist, and prints them with a ready-to-paste curl. Local demo use only: the login and
key are kept in .demo-credentials.json (git-ignored) so every start can print them."""

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from contacts.models import Membership, Workspace
from ingest.api_keys import create_api_key
from ingest.authentication import find_api_key

CREDENTIALS = Path(settings.BASE_DIR) / ".demo-credentials.json"
DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Ensure the demo workspace, an admin login and an API key exist; print them."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")

    def handle(self, *args, url, **options):
        saved = json.loads(CREDENTIALS.read_text()) if CREDENTIALS.exists() else {}
        if not Workspace.objects.filter(slug=DEMO_SLUG).exists():
            self.stdout.write("First start: seeding the demo workspace (a few seconds)…")
            call_command("seed_demo", stdout=self.stdout)
        workspace = Workspace.objects.get(slug=DEMO_SLUG)

        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None:
            saved["password"] = secrets.token_urlsafe(12)
            user = User(username="admin", email="admin@example.com", is_staff=True, is_superuser=True)
            user.set_password(saved["password"])
            user.save()
        # A password the admin chose since is theirs: it is never reset behind their back.
        password = saved.get("password", "")
        if not password or not user.check_password(password):
            password = "(the password you set; manage.py changepassword admin resets it)"
        Membership.objects.get_or_create(user=user, workspace=workspace)

        key = saved.get("api_key")
        found = find_api_key(key) if key else None
        if found is None or found.workspace_id != workspace.pk or found.status() != "active":
            _, key = create_api_key(workspace=workspace, actor=user)
            saved["api_key"] = key
        # Readable by the owner only, from the moment it exists.
        descriptor = os.open(CREDENTIALS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as credentials:
            credentials.write(json.dumps(saved))
        CREDENTIALS.chmod(0o600)

        endpoint = url.rstrip("/") + "/ingest/segment"
        self.stdout.write(
            f"""
natsite is starting at {url}/
  login:     admin / {password}
  workspace: {workspace.name} (slug {workspace.slug})
  API key:   {key}

Send an identify (the recommended format) with:
  curl -sS -u '{key}:' -H 'Content-Type: application/json' {endpoint} \\
    -d '{{"type": "identify", "timestamp": "'$(date -u +%Y-%m-%dT%H:%M:%SZ)'", "traits": {{"email": "peter@initech.com"}}, "page": {{"url": "https://initech.com/pricing"}}}}'
"""
        )
