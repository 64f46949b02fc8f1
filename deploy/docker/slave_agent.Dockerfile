# A rack of slave modules: cell measurement and balancing (simulated battery by default).
# Build from the repository root: docker build -f deploy/docker/slave_agent.Dockerfile .
# A rack is chosen with BMS_RACK (a number, or "ordinal" in a StatefulSet) and
# BMS_MODULES_PER_RACK; the stack's broker knows racks only (user slave_agent-rack<r>), so a
# free module range (BMS_MODULES) is for brokers without the generated ACL.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN groupadd --system --gid 10001 bms \
 && useradd --system --uid 10001 --gid bms --no-create-home --home-dir /app bms
WORKDIR /app
# dependencies first: this layer is rebuilt only when uv.lock changes
COPY deploy/requirements/slave_agent.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY shared/ shared/
COPY services/__init__.py services/
COPY services/slave_agent/ services/slave_agent/
# compiled now: the non-root user cannot write __pycache__ at run time
RUN python -m compileall -q shared services
# numeric, so Kubernetes can verify runAsNonRoot
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=8s --start-period=60s --retries=3 \
  CMD ["python", "-m", "shared.healthcheck", "slave_agent"]
CMD ["python", "-m", "services.slave_agent"]
