"""Drop the single-column index on LedgerEntry.user: (user, asset) leads with it.

Only the index goes; Django's AlterField would also drop and re-create (so re-validate,
under lock) the foreign key.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "accounts_ledgerentry_user_id_17f02ddb"',
                    reverse_sql=(
                        'CREATE INDEX IF NOT EXISTS "accounts_ledgerentry_user_id_17f02ddb" '
                        'ON "accounts_ledgerentry" ("user_id")'
                    ),
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name='ledgerentry',
                    name='user',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='ledger_entries', to=settings.AUTH_USER_MODEL),
                ),
            ],
        ),
    ]
