"""`manage.py bench_save --seconds S`: create `soak_item` rows one per transaction (each save
publishes at commit, as django-cqrs does) for S seconds; prints how many were saved."""
import time

from django.core.management.base import BaseCommand

from interop_master.models import SoakItem


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument('--seconds', type=float, required=True)

    def handle(self, *args, **options):
        deadline = time.monotonic() + options['seconds']
        saved = 0
        while time.monotonic() < deadline:
            SoakItem.objects.create(name='item {0}'.format(saved), value=saved, note=None)
            saved += 1
        self.stdout.write(str(saved))
