"""gunicorn's settings for natsite, read by default when gunicorn starts in this folder.

Segment sends the API key as the Basic-auth user name, and gunicorn's default access
log prints that user name (%(u)s): the format below leaves it out, so keys never reach
the logs. Everything else (bind, workers) comes from the command line or the
environment (WEB_CONCURRENCY is read by gunicorn itself).
"""

access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Each worker listens on a socket of its own (SO_REUSEPORT), and the kernel spreads new
# connections over them. With one shared socket, the worker that happens to wake first
# accepts a burst of connections, and since Segment (or a proxy) keeps its connections
# open, the same worker then serves all of their requests while the others idle: one
# process, one core. The price: connections still waiting in the queue of a worker that
# dies or restarts are reset, and the sender sends again.
reuse_port = True
