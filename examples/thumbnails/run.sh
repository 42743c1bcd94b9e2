#!/usr/bin/env bash
# Runs the thumbnail array job on Barge: one child per image of INPUT_DIR, thumbnails into
# OUTPUT_DIR. Needs `barge up` running with the Docker runner and the image from build-image.sh.
#
#   examples/thumbnails/run.sh INPUT_DIR OUTPUT_DIR
#
# Environment: BARGE_ENDPOINT (default http://127.0.0.1:8433), QUEUE (default `default`),
# IMAGE (default barge-examples/thumbnail:latest), AWS (the aws command, default `aws`).
set -euo pipefail
if [[ $# -ne 2 ]]; then
    echo "usage: $0 INPUT_DIR OUTPUT_DIR" >&2
    exit 2
fi
input="$(realpath "$1")"
mkdir -p "$2"
output="$(realpath "$2")"
endpoint="${BARGE_ENDPOINT:-http://127.0.0.1:8433}"
queue="${QUEUE:-default}"
image="${IMAGE:-barge-examples/thumbnail:latest}"
aws_cmd="${AWS:-aws}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-barge}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-barge}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
batch() { $aws_cmd batch --endpoint-url "$endpoint" --output text "$@"; }

count=$(find "$input" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) | wc -l)
if [[ $count -lt 2 ]]; then
    echo "$input holds $count images; an array job needs at least 2" >&2
    exit 1
fi

props=$(cat <<JSON
{
  "image": "$image",
  "command": ["--input", "/input", "--output", "/output", "--size", "128"],
  "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "256"}],
  "volumes": [
    {"name": "images", "host": {"sourcePath": "$input"}},
    {"name": "thumbnails", "host": {"sourcePath": "$output"}}
  ],
  "mountPoints": [
    {"sourceVolume": "images", "containerPath": "/input", "readOnly": true},
    {"sourceVolume": "thumbnails", "containerPath": "/output", "readOnly": false}
  ]
}
JSON
)
batch register-job-definition --job-definition-name thumbnails --type container \
    --container-properties "$props" --query jobDefinitionArn >/dev/null
job=$(batch submit-job --job-name thumbnails --job-queue "$queue" --job-definition thumbnails \
    --array-properties "size=$count" --query jobId)
echo "submitted array job $job: $count children"

while true; do
    status=$(batch describe-jobs --jobs "$job" --query 'jobs[0].status')
    case "$status" in
        SUCCEEDED|FAILED) break ;;
    esac
    sleep 1
done
$aws_cmd batch --endpoint-url "$endpoint" describe-jobs --jobs "$job" \
    --query 'jobs[0].arrayProperties.statusSummary' --output json
echo "array job $job $status; thumbnails in $output:"
ls "$output"
[[ $status == SUCCEEDED ]]
