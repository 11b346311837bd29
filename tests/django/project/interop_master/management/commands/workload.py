"""`manage.py workload changes`: what a Django master does to its rows, published by django-cqrs:
creates with awkward values, full saves, a tracked change, update_fields with the cqrs flag,
bulk_create, bulk_update and deletes. Prints the item keys it left as JSON.

`manage.py workload poison`: one item named `poison` (a replica's CHECK refuses it)."""
import datetime
import decimal
import json

from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from interop_master.models import Item, Label

TEXTS = ['plain', 'quote " backslash \\ slash /', 'ünïcødé ✓', 'emoji 🦀', '', "semi; 'single'"]
PRICES = ['0.00', '0.05', '10.00', '1234.50', '99999999.99', '-7.10']
RATIOS = [0.1, 1.0 / 3.0, 2.5, 1e-7, -0.0, 12345.678]


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument('scenario', choices=['changes', 'poison'])

    def handle(self, *args, **options):
        if options['scenario'] == 'poison':
            item = Item.objects.create(
                name='poison', value=1, price=decimal.Decimal('1.00'), ratio=1.0, flag=True,
                day=datetime.date(2024, 1, 1), at=timezone.now(), note=None, tags={}, parent=None,
            )
            self.stdout.write(json.dumps([item.pk]))
            return
        zone = timezone.get_current_timezone()
        labels = [Label.objects.create(name='label {0}'.format(i)) for i in range(3)]
        items = []
        for i in range(30):
            items.append(Item.objects.create(
                name=TEXTS[i % len(TEXTS)] + ' {0}'.format(i),
                value=(i - 10) * 1_000_000_007 if i % 7 else -(2 ** 62),
                price=decimal.Decimal(PRICES[i % len(PRICES)]),
                ratio=RATIOS[i % len(RATIOS)],
                flag=i % 2 == 0,
                day=datetime.date(2024, 2, 29) + datetime.timedelta(days=i),
                at=datetime.datetime(2024, 3, 31, 1, 30, i, (i % 3) * 250_000, tzinfo=zone),
                note=None if i % 3 == 0 else 'note {0}'.format(i),
                tags={'i': i, 'nested': {'k': None, 'f': 1.5, 's': 'e/é'}, 'l': [1, 'two']},
                parent=items[0] if i % 4 else None,
            ))
        # A full save, a tracked change and an untracked one.
        for item in items[:10]:
            item.name = item.name + ' saved'
            item.value += 1
            item.save()
        items[10].note = 'changed untracked'
        items[10].save()
        # update_fields with the cqrs flag bumps the revision and publishes.
        items[11].price = decimal.Decimal('42.42')
        items[11].save(update_fields=['price'], update_cqrs_fields=True)
        # Several changes of one row in a transaction: one SAVE with the final state.
        with transaction.atomic():
            item = items[12]
            item.value = 12
            item.save()
            item.flag = not item.flag
            item.save()
        Item.cqrs.bulk_create([
            Item(
                name='bulk {0}'.format(i), value=i, price=decimal.Decimal('1.10'), ratio=1.5,
                flag=True, day=datetime.date(2025, 1, 1), at=timezone.now(), note=None,
                tags=[i], parent=items[1],
            )
            for i in range(5)
        ])
        Item.cqrs.bulk_update(Item.objects.filter(name__startswith='bulk'), value=F('value') + 100)
        for item in items[20:25]:
            item.delete()
        self.stdout.write(json.dumps(sorted(Item.objects.values_list('id', flat=True))))
