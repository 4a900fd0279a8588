"""Bot API routes. No trailing slashes: clients call e.g. `/api/v1/capital` exactly."""

from django.urls import path

from accounts.api import views

urlpatterns = [
    path("api/v1/status", views.StatusView.as_view(), name="api-status"),
    path("api/v1/time", views.TimeView.as_view(), name="api-time"),
    path("api/v1/capital", views.CapitalView.as_view(), name="api-capital"),
    path("wapi/v1/capital/deposits", views.DepositsView.as_view(), name="api-deposits"),
    path("wapi/v1/capital/withdrawals", views.WithdrawalsView.as_view(), name="api-withdrawals"),
]
