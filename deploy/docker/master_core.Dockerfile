# The master of one system: pack state, protection, contactors, SOC/SOH, limits, event log.
# Build from the repository root: docker build -f deploy/docker/master_core.Dockerfile .
# (This image also runs the stack's one-shot credentials step, see deploy/compose.yaml.)
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --system --gid 10001 bms \
 && useradd --system --uid 10001 --gid bms --no-create-home --home-dir /app bms \
 && mkdir /data && chown bms:bms /data
WORKDIR /app
# dependencies first: this layer is rebuilt only when uv.lock changes
COPY deploy/requirements/master_core.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY shared/ shared/
COPY services/__init__.py services/
COPY services/master_core/ services/master_core/
# the in-process simulated plant, for BMS_HARDWARE=simulated (the demo); a real installation
# runs BMS_HARDWARE=devices and never imports it
COPY services/plant/ services/plant/
# the site controller (deploy/compose.site.yaml) runs from this image: it needs nothing more
COPY services/site_controller/ services/site_controller/
# compiled now: the non-root user cannot write __pycache__ at run time
RUN python -m compileall -q shared services
# numeric, so Kubernetes can verify runAsNonRoot
USER 10001:10001
ENV BMS_DATA_DIR=/data
HEALTHCHECK --interval=10s --timeout=8s --start-period=60s --retries=3 \
  CMD ["python", "-m", "shared.healthcheck", "master_core"]
CMD ["python", "-m", "services.master_core"]
