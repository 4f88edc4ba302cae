# One image for the web process and the worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY client ./client
COPY pyproject.toml README.md ./
COPY config ./config
COPY migrations ./migrations
COPY webapp ./webapp
COPY workers ./workers
COPY wsgi.py ./
RUN pip install --no-cache-dir ./client . && useradd --system --home /app scriptorium && mkdir -p /app/instance \
    && chown scriptorium /app/instance
USER scriptorium
EXPOSE 5000
CMD ["scriptorium", "serve", "--host", "0.0.0.0", "--workers", "2"]
