from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("djtest", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="IntegerValue",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100, unique=True)),
                ("value", models.IntegerField(default=0)),
            ],
        ),
    ]
