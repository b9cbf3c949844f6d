# gunicorn.conf.py as gunicorn's deployment guide writes it; wsgi-server
# reads it the same way (run from this directory, or with -c):
#   wsgi-server -c examples/config/gunicorn.conf.py
import multiprocessing
import os

wsgi_app = "hello:application"
pythonpath = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "apps")
bind = "127.0.0.1:8000"
workers = min(multiprocessing.cpu_count() * 2 + 1, 4)
threads = 4
timeout = 30
graceful_timeout = 30
keepalive = 5
loglevel = "info"
errorlog = "-"
proc_name = "hello"
raw_env = ["APP_ENV=production"]


def post_fork(server, worker):
    server.log.info("worker %s spawned", worker.pid)


def when_ready(server):
    server.log.info("server ready with %s workers", server.num_workers)
