#!/usr/bin/env bash
# Builds the two images, starts the CPU compose stack, and checks it as a user would: the app
# answers, the backend refuses a request without the token, a tiny `shapes` run and a tiny
# image-folder run (from the data volume) both finish with a checkpoint, then everything stops.
#
#   bash scripts/docker_smoke.sh              # `make docker-smoke`
#   SKIP_BUILD=1 bash scripts/docker_smoke.sh # reuse images already built
#   PIP_INDEX_URL=... bash scripts/docker_smoke.sh   # build behind a package mirror
#
# Needs a Docker engine and compose (v2 `docker compose` or v1 `docker-compose`); it uses
# ports 8000 and 8501 on 127.0.0.1 and a temporary data folder, and removes both afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  echo "docker_smoke: no 'docker compose' or 'docker-compose' found" >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "docker_smoke: no Docker engine answers (is dockerd running?)" >&2
  exit 2
fi

PROTOSCOPE_TOKEN="smoke-$(date +%s)-$RANDOM"
PROTOSCOPE_DATA_DIR="$(mktemp -d /tmp/protoscope-smoke.XXXXXX)"
export PROTOSCOPE_TOKEN PROTOSCOPE_DATA_DIR
DC=("${COMPOSE[@]}" -f docker-compose.cpu.yml -p protoscope-smoke)
API=http://127.0.0.1:8000
AUTH=(-H "Authorization: Bearer $PROTOSCOPE_TOKEN")
T0=$(date +%s)

cleanup() {
  "${DC[@]}" down --remove-orphans >/dev/null 2>&1 || true
  # The containers write as root; remove their files from inside one when we cannot.
  rm -rf "$PROTOSCOPE_DATA_DIR" 2>/dev/null \
    || docker run --rm -v "$PROTOSCOPE_DATA_DIR:/d" protoscope-backend:latest rm -rf /d/runs /d/datasets
  rm -rf "$PROTOSCOPE_DATA_DIR" 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '[%4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { echo "docker_smoke: FAILED: $*" >&2; "${DC[@]}" logs --tail 40 >&2 || true; exit 1; }

json_field() {  # json_field FIELD  (reads a JSON object on stdin)
  python3 -c "import json,sys; print(json.load(sys.stdin).get('$1'))"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || fail "$what: not within ${limit}s"
    sleep 2
  done
}

run_and_wait() {  # run_and_wait JSON_BODY  -> waits until the run completes
  local body=$1 id status
  id=$(curl -sf "${AUTH[@]}" -H 'Content-Type: application/json' -d "$body" "$API/runs" \
    | json_field id) || fail "POST /runs $body was refused"
  step "run $id started: $body"
  local end=$(( $(date +%s) + 600 ))
  while :; do
    status=$(curl -sf "${AUTH[@]}" "$API/runs/$id" | json_field status)
    case "$status" in
      completed) break ;;
      failed|stopped|interrupted) fail "run $id ended as $status" ;;
    esac
    [ "$(date +%s)" -lt "$end" ] || fail "run $id still '$status' after 600 s"
    sleep 3
  done
  local n
  n=$(curl -sf "${AUTH[@]}" "$API/checkpoints?run_id=$id" \
    | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
  [ "$n" -ge 1 ] || fail "run $id completed without a checkpoint"
  step "run $id completed with $n checkpoint(s)"
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  build_args=()
  for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    [ -n "${!v:-}" ] && build_args+=(--build-arg "$v=${!v}")
  done
  step "building the images"
  "${DC[@]}" build "${build_args[@]}"
fi

step "starting the CPU stack (data in $PROTOSCOPE_DATA_DIR)"
"${DC[@]}" up -d
wait_for 120 "backend /health" curl -sf "${AUTH[@]}" "$API/health"
wait_for 120 "frontend health" curl -sf http://127.0.0.1:8501/_stcore/health
step "backend and frontend answer"

code=$(curl -s -o /dev/null -w '%{http_code}' "$API/runs")
[ "$code" = 401 ] || fail "GET /runs without the token gave $code, not 401"
step "the backend refuses a request without the token (401)"

run_and_wait '{"method": "swav", "dataset": "shapes", "epochs": 2}'

# An image folder on the data volume, as the README tells users to lay out their own images.
"${DC[@]}" exec -T backend python - <<'EOF'
from pathlib import Path
from PIL import Image, ImageDraw
root = Path("/data/datasets/smoke")
for k, colour in enumerate(["red", "blue"]):
    folder = root / f"class{k}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(40):
        im = Image.new("RGB", (32, 32), "white")
        ImageDraw.Draw(im).ellipse((4 + i % 8, 4, 24 + i % 8, 24), fill=colour)
        im.save(folder / f"{i:03d}.png")
EOF
run_and_wait '{"method": "swav", "dataset": "imagefolder", "data_root": "/data/datasets/smoke", "epochs": 2, "batch_size": 16}'

code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" -H 'Content-Type: application/json' \
  -d '{"method": "swav", "dataset": "imagefolder", "data_root": "/etc"}' "$API/runs")
[ "$code" -ge 400 ] && [ "$code" -lt 500 ] || fail "a data_root outside /data gave $code, not 4xx"
step "a data_root outside the data volume is refused ($code)"

step "all checks passed"
