# The fleet centre's read-only list of sites, fed from the central broker (fleet/{site}/...).
# Build from the repository root: docker build -f deploy/docker/fleet_view.Dockerfile .
# It keeps nothing on disk: its queue of what arrived while it was away is the broker's.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --system --gid 10001 bms \
 && useradd --system --uid 10001 --gid bms --no-create-home --home-dir /app bms
WORKDIR /app
# dependencies first: this layer is rebuilt only when uv.lock changes
COPY deploy/requirements/fleet_view.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY shared/ shared/
COPY services/__init__.py services/
COPY services/fleet_view/ services/fleet_view/
# compiled now: the non-root user cannot write __pycache__ at run time
RUN python -m compileall -q shared services
# numeric, so Kubernetes can verify runAsNonRoot
USER 10001:10001
ENV BMS_FLEET_HOST=0.0.0.0 BMS_FLEET_PORT=8090
EXPOSE 8090
# no presence of its own on the central broker (RabbitMQ keeps retained messages per node):
# /healthz answers 200 while the view is connected to the broker, 503 while it is not
HEALTHCHECK --interval=10s --timeout=8s --start-period=60s --retries=3 \
  CMD python -m shared.healthcheck fleet_view --http "http://127.0.0.1:${BMS_FLEET_PORT}/healthz"
CMD ["python", "-m", "services.fleet_view"]
