# The pave-tracker image: the same package for the release step, workers and beat.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home tracker
USER tracker
CMD ["pave-tracker", "--help"]
