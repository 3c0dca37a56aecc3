from django.urls import path

from contacts import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
]
