from django.http import HttpResponse


def image_list(request):
    return HttpResponse("images")


def batch_list(request):
    return HttpResponse("imports")
