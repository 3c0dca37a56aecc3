from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from natsite import login

# The admin's sign-in counts and refuses attempts like the app's (natsite/login.py).
admin.site.login_form = login.AdminLoginForm

urlpatterns = [
    # First: the webhook's pattern is then the first one tried, on every message.
    path("", include("ingest.urls")),
    path("admin/login/", login.answers_429_when_rate_limited(admin.site.login)),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        login.answers_429_when_rate_limited(
            auth_views.LoginView.as_view(authentication_form=login.LoginForm, redirect_authenticated_user=True)
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The webhook's OpenAPI description (ingest/openapi.py), YAML or ?format=json.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("", include("contacts.urls")),
]

# Under /ingest/ errors are JSON like the webhook's own answers; HTML elsewhere.
handler400 = "natsite.error_pages.bad_request"
handler403 = "natsite.error_pages.permission_denied"
handler404 = "natsite.error_pages.page_not_found"
handler500 = "natsite.error_pages.server_error"
