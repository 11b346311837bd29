"""`manage.py bench_save --seconds S [--updates N]`: for S seconds, create `soak_item` rows one per
transaction, or with `--updates N` change rows 1..N in turn, one per transaction (each save
publishes at commit, as django-cqrs does); prints how many were saved."""
import time

from django.core.management.base import BaseCommand

from interop_master.models import SoakItem


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument('--seconds', type=float, required=True)
        parser.add_argument('--updates', type=int, default=0)

    def handle(self, *args, **options):
        deadline = time.monotonic() + options['seconds']
        updates = options['updates']
        saved = 0
        while time.monotonic() < deadline:
            if updates:
                item = SoakItem.objects.get(pk=saved % updates + 1)
                item.value += 1
                item.save()
            else:
                SoakItem.objects.create(name='item {0}'.format(saved), value=saved, note=None)
            saved += 1
        self.stdout.write(str(saved))
