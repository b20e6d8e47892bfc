# The Streamlit app talks to the backend over HTTP only and imports nothing from models/, so
# its image needs neither torch nor faiss.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
WORKDIR /app
RUN pip install --no-cache-dir "streamlit>=1.40" "plotly>=5.20" "requests>=2.31" "numpy>=1.26"
COPY .streamlit ./.streamlit
COPY frontend ./frontend
ENV PYTHONPATH=/app
EXPOSE 8501
CMD ["streamlit", "run", "frontend/app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
