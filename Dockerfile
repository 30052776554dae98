FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    IDP_INSTANCE_DIR=/var/lib/idp

RUN useradd --system --create-home --uid 10001 idp \
 && mkdir -p /var/lib/idp && chown idp:idp /var/lib/idp

WORKDIR /app
COPY pyproject.toml README.md wsgi.py ./
COPY idp ./idp
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations
COPY config ./config
RUN pip install --no-cache-dir -e .

USER idp
EXPOSE 5000
# Run `idp init` once per release (a job or an init container) before starting new instances.
CMD ["idp", "serve", "--host", "0.0.0.0", "--port", "5000", "--workers", "4"]
