"""The master models: the same tables the Rust master in tests/django/main.rs publishes."""
import uuid

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Label(MasterMixin):
    """A UUID primary key."""

    CQRS_ID = 'interop_label'

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=200)

    class Meta:
        db_table = 'labels'


class Item(MasterMixin):
    """Every value form of the protocol; `value` tracked; a foreign key sent as `parent`.

    The foreign key points at an integer key: django-cqrs 3.1.0 cannot publish one whose target
    has a UUID key (the value stays a UUID object and ujson raises TypeError after the commit).
    """

    CQRS_ID = 'interop_item'
    CQRS_TRACKED_FIELDS = ('value',)

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=200)
    value = models.BigIntegerField()
    price = models.DecimalField(max_digits=12, decimal_places=2)
    ratio = models.FloatField()
    flag = models.BooleanField()
    day = models.DateField()
    at = models.DateTimeField()
    note = models.CharField(max_length=200, null=True)
    tags = models.JSONField()
    parent = models.ForeignKey('self', null=True, on_delete=models.SET_NULL)

    class Meta:
        db_table = 'items'


class SoakItem(MasterMixin):
    """The shape of the Rust harnesses' model (tests/support/items.rs), for cqrs-bench's peer rows."""

    CQRS_ID = 'soak_item'
    CQRS_TRACKED_FIELDS = ('value',)

    id = models.BigAutoField(primary_key=True)
    name = models.TextField()
    value = models.BigIntegerField()
    note = models.TextField(null=True)

    class Meta:
        db_table = 'soak_items'
