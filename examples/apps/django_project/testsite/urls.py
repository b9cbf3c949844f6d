"""URLs of the test Django project."""

from django.urls import path

from . import views

urlpatterns = [
    path("api/json", views.json_view, name="json"),
    path("form", views.form_view),
    path("protected-form", views.protected_form_view),
    path("upload", views.upload_view),
    path("cookies/set", views.set_cookies_view),
    path("cookies", views.cookies_view),
    path("redirect", views.redirect_view),
    path("stream", views.stream_view),
    path("file", views.file_view),
    path("meta", views.meta_view),
    path("error", views.error_view),
]
