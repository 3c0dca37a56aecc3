from django.urls import path

from contacts import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("", views.dashboard, name="dashboard"),
    path("contacts/", views.contact_list, name="contact-list"),
    path("contacts/export.csv", views.contact_export, name="contact-export"),
    path("contacts/<int:contact_id>/", views.contact_detail, name="contact-detail"),
]
