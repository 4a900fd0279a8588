from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("accounts.api.urls")),
    path("", include("trading.api.urls")),
    path("", include("trading.urls")),
    path("", include("marketdata.api.urls")),
]

# Unknown URLs under /api and /wapi answer in the bot API's {"code","message"} shape.
handler404 = "exchange_site.api_errors.handler404"
handler500 = "exchange_site.api_errors.handler500"
