"""Traders' pages for markets (the bot API's routes are in `trading.api.urls`)."""

from django.urls import path

from trading import views

app_name = "trading"
urlpatterns = [
    path("markets/", views.markets, name="markets"),
    path("markets/<str:symbol>/", views.market, name="market"),
    path("markets/<str:symbol>/orders/", views.order_create, name="order_create"),
    path("markets/<str:symbol>/orders/mine/", views.my_orders, name="my_orders"),
    path("markets/<str:symbol>/orders/cancel-all/", views.order_cancel_all, name="order_cancel_all"),
    path("markets/<str:symbol>/orders/<int:order_id>/cancel/", views.order_cancel, name="order_cancel"),
    path("markets/<str:symbol>/balances/", views.balances, name="balances"),
]
