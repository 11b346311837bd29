"""The replica models: the same tables the Rust replica in tests/django/main.rs keeps.

The master's foreign key is a plain integer field named `parent` (column parent_id): a Django
ForeignKey on a replica refuses the key django-cqrs sends (see the README's interoperability
section).
"""
from django.db import models

from dj_cqrs.mixins import ReplicaMixin


class Label(ReplicaMixin):
    CQRS_ID = 'interop_label'

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=200)

    class Meta:
        db_table = 'labels'


class Item(ReplicaMixin):
    CQRS_ID = 'interop_item'

    id = models.BigIntegerField(primary_key=True)
    name = models.CharField(max_length=200)
    value = models.BigIntegerField()
    price = models.DecimalField(max_digits=12, decimal_places=2)
    ratio = models.FloatField()
    flag = models.BooleanField()
    day = models.DateField()
    at = models.DateTimeField()
    note = models.CharField(max_length=200, null=True)
    tags = models.JSONField()
    parent = models.BigIntegerField(null=True, db_column='parent_id')

    class Meta:
        db_table = 'items'


class SoakItem(ReplicaMixin):
    """The replica of the Rust harnesses' model, for cqrs-bench's peer rows."""

    CQRS_ID = 'soak_item'

    id = models.BigIntegerField(primary_key=True)
    name = models.TextField()
    value = models.BigIntegerField()
    note = models.TextField(null=True)

    class Meta:
        db_table = 'soak_replica_items'
