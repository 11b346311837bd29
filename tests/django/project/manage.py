#!/usr/bin/env python
"""The interoperability tests' Django project: a django-cqrs master or replica (INTEROP_ROLE)."""
import os
import sys

if __name__ == '__main__':
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'interop.settings')
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
