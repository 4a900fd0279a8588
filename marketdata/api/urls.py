"""Public market-data routes of the bot API. No trailing slashes, as clients call them."""

from django.urls import path

from marketdata.api import views

urlpatterns = [
    path("api/v1/ticker", views.TickerView.as_view(), name="api-ticker"),
    path("api/v1/tickers", views.TickersView.as_view(), name="api-tickers"),
    path("api/v1/depth", views.DepthView.as_view(), name="api-depth"),
    path("api/v1/trades", views.TradesView.as_view(), name="api-trades"),
    path("api/v1/trades/history", views.TradesHistoryView.as_view(), name="api-trades-history"),
    path("api/v1/klines", views.KlinesView.as_view(), name="api-klines"),
]
