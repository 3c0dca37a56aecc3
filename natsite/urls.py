from django.contrib import admin
from django.urls import include, path

from natsite import login

# The admin's sign-in counts and refuses attempts like the app's (natsite/login.py).
admin.site.login_form = login.AdminLoginForm

urlpatterns = [
    path("admin/login/", login.answers_429_when_rate_limited(admin.site.login)),
    path("admin/", admin.site.urls),
    path("", include("ingest.urls")),
    path("", include("contacts.urls")),
]

# Under /ingest/ errors are JSON like the webhook's own answers; HTML elsewhere.
handler400 = "natsite.error_pages.bad_request"
handler403 = "natsite.error_pages.permission_denied"
handler404 = "natsite.error_pages.page_not_found"
handler500 = "natsite.error_pages.server_error"
