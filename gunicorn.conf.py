"""gunicorn's settings for natsite, read by default when gunicorn starts in this folder.

Segment sends the API key as the Basic-auth user name, and gunicorn's default access
log prints that user name (%(u)s): the format below leaves it out, so keys never reach
the logs. Everything else (bind, workers) comes from the command line or the
environment (WEB_CONCURRENCY is read by gunicorn itself).
"""

access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
