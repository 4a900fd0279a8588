"""Trading routes of the bot API. No trailing slashes: clients call e.g. `/api/v1/order` exactly."""

from django.urls import path

from trading.api import views

urlpatterns = [
    path("api/v1/assets", views.AssetsView.as_view(), name="api-assets"),
    path("api/v1/markets", views.MarketsView.as_view(), name="api-markets"),
    path("api/v1/market", views.MarketView.as_view(), name="api-market"),
    path("api/v1/securities", views.SecuritiesView.as_view(), name="api-securities"),
    path("api/v1/order", views.OrderView.as_view(), name="api-order"),
    path("api/v1/orders", views.OrdersView.as_view(), name="api-orders"),
    path("wapi/v1/history/orders", views.OrderHistoryView.as_view(), name="api-order-history"),
    path("wapi/v1/history/fills", views.FillHistoryView.as_view(), name="api-fill-history"),
]
