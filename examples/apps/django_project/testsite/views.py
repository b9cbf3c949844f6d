"""Views of the test Django project: JSON, forms, uploads, cookies,
redirects, streaming and files."""

import hashlib

from django.http import (
    FileResponse,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt


def json_view(request):
    return JsonResponse({"framework": "django", "method": request.method,
                         "query": request.GET.dict()})


@csrf_exempt
def form_view(request):
    if request.method != "POST":
        return HttpResponse("POST only", status=405)
    return JsonResponse({"fields": {key: request.POST.getlist(key) for key in request.POST}})


def protected_form_view(request):
    # Not csrf_exempt: a POST without a token gets Django's 403.
    return HttpResponse("accepted")


@csrf_exempt
def upload_view(request):
    uploaded = request.FILES["file"]
    digest = hashlib.sha256()
    size = 0
    for chunk in uploaded.chunks():
        size += len(chunk)
        digest.update(chunk)
    return JsonResponse({"filename": uploaded.name, "size": size,
                         "sha256": digest.hexdigest(),
                         "fields": request.POST.dict()})


def set_cookies_view(request):
    response = JsonResponse({"set": sorted(request.GET)})
    for name, value in request.GET.items():
        response.set_cookie(name, value, httponly=True)
    return response


def cookies_view(request):
    return JsonResponse({"cookies": request.COOKIES})


def redirect_view(request):
    return HttpResponseRedirect(reverse("json"))


def stream_view(request):
    count = int(request.GET.get("n", "5"))
    return StreamingHttpResponse((f"django chunk {i}\n" for i in range(count)),
                                 content_type="text/plain")


def file_view(request):
    return FileResponse(open(__file__, "rb"), content_type="text/x-python")


def meta_view(request):
    return JsonResponse({
        "host": request.get_host(),
        "absolute_uri": request.build_absolute_uri(),
        "is_secure": request.is_secure(),
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME"),
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "user_agent": request.META.get("HTTP_USER_AGENT"),
    })


def error_view(request):
    raise RuntimeError("django view failed on purpose")
