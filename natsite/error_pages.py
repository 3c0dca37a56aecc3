"""Error pages: JSON {"message": ...} under /ingest/ (Segment shows the message in its
debugger, and a machine client must never get an HTML page), Django's HTML elsewhere."""

from django.http import JsonResponse
from django.views import defaults

API_PREFIX = "/ingest/"


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request, exception=None):
    if _is_api(request):
        return JsonResponse({"message": "Bad request"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return JsonResponse({"message": "Forbidden"}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse({"message": "No such endpoint: POST to /ingest/segment"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"message": "Server error"}, status=500)
    return defaults.server_error(request)
