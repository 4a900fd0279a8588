from rest_framework.authentication import BaseAuthentication


class SignedRequestAuthentication(BaseAuthentication):
    """Placeholder: replaced by the Ed25519 implementation."""

    def authenticate(self, request):  # type: ignore[no-untyped-def]
        return None
