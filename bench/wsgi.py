"""natsite's WSGI application, counting the SQL statements each request sends.

Used only by bench/ingest.py: every response carries `X-Queries: <n>`, the number of
statements the request executed (BEGIN and COMMIT are not statements Django sends
through a cursor, so they are not counted here; the harness reads transactions from
pg_stat_database instead).
"""

import threading

from django.db.backends.signals import connection_created

from natsite.wsgi import application as natsite_application

_counter = threading.local()


def _count(execute, sql, params, many, context):
    _counter.queries = getattr(_counter, "queries", 0) + 1
    return execute(sql, params, many, context)


def _install(sender, connection, **kwargs):
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_install)


def application(environ, start_response):
    _counter.queries = 0

    def start_counted(status, headers, exc_info=None):
        headers.append(("X-Queries", str(_counter.queries)))
        return start_response(status, headers, exc_info)

    return natsite_application(environ, start_counted)
