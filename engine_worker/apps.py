from django.apps import AppConfig


class EngineWorkerConfig(AppConfig):
    name = "engine_worker"
    default_auto_field = "django.db.models.BigAutoField"
