# The web application: configuration, live view, events. It owns the retained configuration.
# Build from the repository root: docker build -f deploy/docker/config_ui.Dockerfile .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --system --gid 10001 bms \
 && useradd --system --uid 10001 --gid bms --no-create-home --home-dir /app bms \
 && mkdir /data && chown bms:bms /data
WORKDIR /app
# dependencies first: this layer is rebuilt only when uv.lock changes
COPY deploy/requirements/config_ui.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY shared/ shared/
COPY services/__init__.py services/
COPY services/config_ui/ services/config_ui/
# compiled now: the non-root user cannot write __pycache__ at run time
RUN python -m compileall -q shared services
# numeric, so Kubernetes can verify runAsNonRoot
USER 10001:10001
ENV BMS_UI_HOST=0.0.0.0 BMS_UI_PORT=8000 BMS_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=8s --start-period=60s --retries=3 \
  CMD python -m shared.healthcheck config_ui --http "http://127.0.0.1:${BMS_UI_PORT}/healthz"
CMD ["python", "-m", "services.config_ui"]
