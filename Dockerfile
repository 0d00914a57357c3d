# One image for every process of the pipeline: migrate, bridge, worker, beat, flower, serve.
# docker-compose.yml picks the process with its `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, in a layer of their own: read from pyproject.toml alone, so that a
# change to the code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['bigquery']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself, as a wheel (its migrations travel inside the package). The code
# stays owned by root: the processes that run it cannot rewrite it.
COPY . .
RUN pip install --no-cache-dir --no-deps . && rm -rf /src/build

# Runtime state (a SQLite database when DATABASE_URL is left at its default, exports) goes
# to a directory the unprivileged user owns and runs in. Beat keeps its schedule in Redis.
RUN useradd --system --create-home --uid 10001 --user-group analytics \
    && install -d -o analytics -g analytics /var/lib/analytics

USER analytics
WORKDIR /var/lib/analytics

CMD ["analytics", "--help"]
