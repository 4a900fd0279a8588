"""Drop the single-column indexes on Order.user and Order.market.

(user, -created_at) and (market, accepted_seq) lead with the same columns and serve every
look-up; the two extra indexes were only written, once per order placed. Only the indexes
go: Django's AlterField would also drop and re-create (so re-validate, under lock) the
foreign keys.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('trading', '0002_order_requeued_at'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "trading_order_market_id_03024f4e"',
                    reverse_sql='CREATE INDEX IF NOT EXISTS "trading_order_market_id_03024f4e" ON "trading_order" ("market_id")',
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "trading_order_user_id_d0a6ce67"',
                    reverse_sql='CREATE INDEX IF NOT EXISTS "trading_order_user_id_d0a6ce67" ON "trading_order" ("user_id")',
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name='order',
                    name='market',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='orders', to='trading.market'),
                ),
                migrations.AlterField(
                    model_name='order',
                    name='user',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='orders', to=settings.AUTH_USER_MODEL),
                ),
            ],
        ),
    ]
