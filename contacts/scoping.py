"""The one place that decides what a signed-in user may see: the workspaces they are a
member of, and which of them is current (a user with several can switch)."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from contacts.models import Contact, Workspace

SESSION_KEY = "workspace_id"


def user_workspaces(user):
    return Workspace.objects.for_user(user)


def current_workspace(request):
    """The workspace chosen with ?workspace=<slug> (remembered in the session), else the
    last one chosen, else the user's first; None for a user with no workspace."""
    workspaces = user_workspaces(request.user)
    slug = request.GET.get("workspace")
    if slug:
        chosen = workspaces.filter(slug=slug).first()
        if chosen is None:
            raise Http404("No such workspace")
        request.session[SESSION_KEY] = chosen.pk
        return chosen
    remembered = request.session.get(SESSION_KEY)
    if remembered is not None:
        chosen = workspaces.filter(pk=remembered).first()
        if chosen is not None:
            return chosen
    return workspaces.order_by("name", "pk").first()


def workspace_required(view):
    """Login required; sets request.workspace (and request.workspaces for the switcher)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        request.workspace = current_workspace(request)
        if request.workspace is None:
            return render(request, "no_workspace.html", status=403)
        request.workspaces = list(user_workspaces(request.user).order_by("name", "pk"))
        return view(request, *args, **kwargs)

    return wrapper


def get_contact_for_user(user, contact_id) -> Contact:
    """A contact of one of the user's workspaces; anything else is a 404."""
    try:
        return Contact.objects.for_user(user).select_related("workspace").get(pk=contact_id)
    except (Contact.DoesNotExist, ValueError):
        raise Http404("No such contact") from None
