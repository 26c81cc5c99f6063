# One image for every process of the Procfile (web, worker, autoscale, clock, release);
# deploy/k8s/ picks the command per Deployment. Build: docker build -t dispatch-farm .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/farm PATH=/opt/farm/bin:$PATH

WORKDIR /srv/farm
RUN python -m venv /opt/farm
# The locked dependencies first, so a code change reuses this layer.
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml Procfile ./
COPY app ./app
COPY jobs ./jobs
COPY models ./models
COPY scripts ./scripts
COPY workers ./workers
RUN pip install --no-deps . && useradd --system --uid 10001 --home-dir /srv/farm farm
USER farm

# An image runs as production: it refuses to start without a real JWT_SECRET (README, "Security").
ENV APP_ENV=production WEB_HOST=0.0.0.0 PORT=8000
EXPOSE 8000 9191
CMD ["sh", "-c", "exec uvicorn app.asgi:app --host $WEB_HOST --port $PORT --loop uvloop --http httptools --ws websockets-sansio --no-access-log --no-proxy-headers --lifespan on"]
