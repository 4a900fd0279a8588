"""Pages for traders. Included at the site root (the bot API lives in `accounts.api.urls`)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    # The landing page until the markets page takes "/" over.
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    # Django's LogoutView only accepts POST, so logging out cannot be triggered by a link.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/", views.account, name="account"),
    path("account/deposits/", views.deposit, name="deposit"),
    path("account/withdrawals/", views.withdraw, name="withdraw"),
    path("account/withdrawals/<int:withdrawal_id>/cancel/", views.withdrawal_cancel, name="withdrawal_cancel"),
    path("account/api-keys/", views.api_keys, name="api_keys"),
    path("account/api-keys/token/", views.api_token_create, name="api_token_create"),
    path("account/api-keys/token/revoke/", views.api_token_revoke, name="api_token_revoke"),
    path("account/api-keys/keys/", views.api_key_register, name="api_key_register"),
    path("account/api-keys/keys/<int:api_key_id>/revoke/", views.api_key_revoke, name="api_key_revoke"),
]
