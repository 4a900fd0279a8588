"""Drop the single-column index on Trade.market: both other indexes lead with it.

Only the index goes; Django's AlterField would also drop and re-create (so re-validate,
under lock) the foreign key. On a hypertable TimescaleDB drops the chunks' copies too.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('marketdata', '0003_candle'),
        ('trading', '0004_fill_market_user_unchecked_copies'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "marketdata_trade_market_id_e2e9c442"',
                    reverse_sql=(
                        'CREATE INDEX IF NOT EXISTS "marketdata_trade_market_id_e2e9c442" '
                        'ON "marketdata_trade" ("market_id")'
                    ),
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name='trade',
                    name='market',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='trades', to='trading.market'),
                ),
            ],
        ),
    ]
