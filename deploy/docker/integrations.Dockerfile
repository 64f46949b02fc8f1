# The integrations bridge: JSON mirror, Home Assistant discovery, Prometheus /metrics (9108).
# Build from the repository root: docker build -f deploy/docker/integrations.Dockerfile .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --system --gid 10001 bms \
 && useradd --system --uid 10001 --gid bms --no-create-home --home-dir /app bms \
 && mkdir /data && chown bms:bms /data
WORKDIR /app
# dependencies first: this layer is rebuilt only when uv.lock changes
COPY deploy/requirements/integrations.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY shared/ shared/
COPY services/__init__.py services/
COPY services/integrations/ services/integrations/
# compiled now: the non-root user cannot write __pycache__ at run time
RUN python -m compileall -q shared services
# numeric, so Kubernetes can verify runAsNonRoot
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=8s --start-period=60s --retries=3 \
  CMD ["python", "-m", "shared.healthcheck", "integrations"]
EXPOSE 9108
CMD ["python", "-m", "services.integrations"]
