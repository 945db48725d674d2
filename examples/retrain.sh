#!/bin/sh
# A retraining launcher for deploy/alerts.yaml: driftline runs it with the job as a JSON file.
# Replace the echo with your training pipeline (the fine-tune step of driftline comes later).
set -eu
job_file="$1"
echo "retraining job ${DRIFTLINE_RETRAIN_JOB_ID} for project ${DRIFTLINE_PROJECT}"
cat "$job_file"
