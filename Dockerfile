# Minimal image for the training core; the app issue adds backend and frontend images.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY backend ./backend
COPY frontend ./frontend
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["protoscope"]
CMD ["train", "--method", "swav", "--dataset", "shapes", "--max-minutes", "5", "--out", "/data/runs/demo"]
