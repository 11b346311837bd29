"""Settings from the environment the Rust tests set (tests/django/main.rs):

INTEROP_ROLE      master | replica (which app is installed)
INTEROP_DB        PostgreSQL database on 127.0.0.1:5432, user postgres
INTEROP_AMQP_URL  the broker; INTEROP_EXCHANGE the test's exchange
INTEROP_QUEUE     the replica's queue (replica only)
INTEROP_TIME_ZONE TIME_ZONE (default UTC)
"""
import os

ROLE = os.environ['INTEROP_ROLE']
assert ROLE in ('master', 'replica'), ROLE

SECRET_KEY = 'interop-tests-only'
DEBUG = False
ALLOWED_HOSTS = []
USE_TZ = True
TIME_ZONE = os.environ.get('INTEROP_TIME_ZONE', 'UTC')
DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'

INSTALLED_APPS = ['dj_cqrs', 'interop_' + ROLE]

DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.postgresql',
        'NAME': os.environ['INTEROP_DB'],
        'HOST': os.environ.get('INTEROP_DB_HOST', '127.0.0.1'),
        'PORT': os.environ.get('INTEROP_DB_PORT', '5432'),
        'USER': os.environ.get('INTEROP_DB_USER', 'postgres'),
    },
}

CQRS = {
    'transport': 'dj_cqrs.transport.RabbitMQTransport',
    'url': os.environ['INTEROP_AMQP_URL'],
    'exchange': os.environ['INTEROP_EXCHANGE'],
    'master': {'CQRS_MESSAGE_TTL': 86400},
}
if ROLE == 'replica':
    CQRS['queue'] = os.environ['INTEROP_QUEUE']
    CQRS['replica'] = {
        'CQRS_MAX_RETRIES': int(os.environ.get('INTEROP_MAX_RETRIES', '1')),
        'CQRS_RETRY_DELAY': 1,
    }

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'handlers': {'stderr': {'class': 'logging.StreamHandler'}},
    'root': {'handlers': ['stderr'], 'level': os.environ.get('INTEROP_LOG_LEVEL', 'WARNING')},
}
