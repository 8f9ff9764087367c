from django.db import migrations

# The daily sums of pruned records go: since 0011 the rollups hold every record ever written
# (0011 added the daily sums of days pruned before it into them), pruning leaves the rollups as
# they are, and every total reads the rollups.


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0013_usage_rollup_totals"),
    ]

    operations = [
        migrations.DeleteModel(name="UsageDaily"),
    ]
