# One image for every process of the pipeline: migrate, bridge, worker, beat, flower.
# docker-compose.yml picks the process with its `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The code stays owned by root: the processes that run it cannot rewrite it.
COPY . .
RUN pip install --no-cache-dir -e '.[bigquery]'

# Runtime state (a SQLite database when DATABASE_URL is left at its default) goes
# to a directory the unprivileged user owns. Beat keeps its schedule in Redis.
RUN useradd --system --create-home --uid 10001 --user-group analytics \
    && install -d -o analytics -g analytics /var/lib/analytics

USER analytics

CMD ["analytics", "--help"]
