#!/usr/bin/env sh
# One entrypoint for every role of the image: web | worker QUEUES | beat | manage ARGS...
set -eu
role="${1:-web}"
shift || true
case "$role" in
  web)
    python manage.py migrate --noinput
    exec gunicorn config.wsgi:application --bind 0.0.0.0:8000 \
      --workers "${WEB_CONCURRENCY:-3}" --threads 4 --timeout 300 --access-logfile -
    ;;
  worker)
    # Queues: default (imports, releases), training and inference (GPU hosts).
    # WORKER_POOL=solo on GPU hosts: tasks then run outside daemonic pool children, so training and
    # scoring can start their DataLoader decoding workers.
    exec celery -A config worker --queues "${1:-default}" --pool "${WORKER_POOL:-prefork}" \
      --concurrency "${WORKER_CONCURRENCY:-1}" --hostname "${1:-default}@%h" --loglevel INFO
    ;;
  beat)
    # One per site: the periodic tasks (the stale-job reaper).
    exec celery -A config beat --schedule /tmp/celerybeat-schedule --loglevel INFO
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
