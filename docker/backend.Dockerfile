# The backend: FastAPI + the training workers. torch from PyPI is a CUDA build on x86_64, so the
# same image trains on a GPU when the container gets one (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY backend ./backend
COPY frontend ./frontend
RUN pip install --no-cache-dir -e .
ENV PROTOSCOPE_DATA=/data
EXPOSE 8000
# Inside the container the server must listen on all interfaces, which protoscope only allows
# with PROTOSCOPE_TOKEN set; the compose file passes it and publishes the port on 127.0.0.1.
CMD ["protoscope", "serve", "--host", "0.0.0.0", "--port", "8000", "--data", "/data"]
