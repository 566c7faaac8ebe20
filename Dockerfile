# pointillist images. Two targets:
#   docker build --target cpu -t pointillist:cpu .   # the demo model on the CPU (small)
#   docker build --target gpu -t pointillist:gpu .   # CUDA, for GPU nodes (NVML, FP8)
# Both run `pointillist serve`; settings come from POINTILLIST_CONFIG (the Kubernetes ConfigMap).

# --- The sources both images install (one list, so the two cannot drift apart) -------------------
FROM scratch AS source
COPY constraints.txt pyproject.toml README.md /src/
COPY clients/python /src/clients/python
COPY server /src/server
COPY scheduler /src/scheduler
COPY engine /src/engine

# --- CPU: slim Python, torch's CPU build ---------------------------------------------------------
FROM python:3.12-slim AS cpu
# TORCH_INDEX: a package index that serves torch's CPU-only wheels (PyTorch publishes one), so the
# image does not carry the CUDA libraries; empty takes torch from PyPI as pinned.
ARG TORCH_INDEX=""
WORKDIR /opt/pointillist
COPY --from=source /src ./
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} -c constraints.txt torch \
 && pip install --no-cache-dir -c constraints.txt ./clients/python . \
 && useradd --create-home --uid 10001 pointillist
USER pointillist
EXPOSE 50051 9464
ENTRYPOINT ["pointillist"]
CMD ["serve", "--address", "0.0.0.0:50051"]

# --- GPU: CUDA runtime, torch's CUDA build from PyPI ---------------------------------------------
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_BREAK_SYSTEM_PACKAGES=1
# gcc and the Python headers: Triton builds its kernel launcher with them (compile = true).
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
    gcc python3-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/pointillist
COPY --from=source /src ./
RUN pip3 install --no-cache-dir -c constraints.txt torch \
 && pip3 install --no-cache-dir -c constraints.txt ./clients/python . \
 && useradd --create-home --uid 10001 pointillist
USER pointillist
EXPOSE 50051 9464
ENTRYPOINT ["pointillist"]
CMD ["serve", "--address", "0.0.0.0:50051"]
