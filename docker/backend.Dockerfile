# The backend: FastAPI + the training workers. torch from PyPI is a CUDA build on x86_64, so the
# same image trains on a GPU when the container gets one (see docker-compose.yml).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
# Behind a package mirror: `docker compose build --build-arg PIP_INDEX_URL=...` (pip reads these
# from the environment; they exist only while the image builds).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
WORKDIR /app
# Dependencies first, against empty packages (and an empty README, which pyproject names), so
# that editing the source or the docs does not reinstall torch: the editable install points at
# /app, where the real packages are copied next.
COPY pyproject.toml ./
RUN mkdir protoscope models backend frontend \
 && touch README.md protoscope/__init__.py models/__init__.py backend/__init__.py \
    frontend/__init__.py \
 && pip install --no-cache-dir -e .
COPY protoscope ./protoscope
COPY models ./models
COPY backend ./backend
COPY frontend ./frontend
ENV PROTOSCOPE_DATA=/data
EXPOSE 8000
# Inside the container the server must listen on all interfaces, which protoscope only allows
# with PROTOSCOPE_TOKEN set; the compose file passes it and publishes the port on 127.0.0.1.
CMD ["protoscope", "serve", "--host", "0.0.0.0", "--port", "8000", "--data", "/data"]
