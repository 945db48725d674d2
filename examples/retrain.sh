#!/bin/sh
# The retraining pipeline behind deploy/alerts.yaml's `retraining.command`: driftline runs it
# with the job as a JSON file when a `retrain:` rule fires. It exports the reviewed feedback as
# a dataset snapshot, fine-tunes the model in service on it, and lets the eval gate promote the
# candidate only if it beats that model (a rejected candidate is announced by the
# CandidateRejected rule; this job still succeeds).
#
# The job is one project's (DRIFTLINE_PROJECT, set by driftline): every command below sends it,
# and the server refuses a key of any other project, so project B's alert never retrains A.
# `driftline serve` owns the store, so every step goes through its API:
#   DRIFTLINE_API_KEY  an admin key of the job's project (required): give each project its own
#                      with `retraining.api_key_file: /run/secrets/driftline-{project}.key`
#   DRIFTLINE_URL      the collector (default: the local `driftline serve`)
#   DRIFTLINE_MODELS   where candidates and exports go (default ./models)
#   DRIFTLINE_METHOD   dpo (default), kto, ppo or grpo; for ppo/grpo set DRIFTLINE_REWARD_MODEL
# The model in service must be registered once: `driftline models register ./models/current`.
set -eu
job_file="$1"
job="${DRIFTLINE_RETRAIN_JOB_ID}"
models="${DRIFTLINE_MODELS:-./models}"
method="${DRIFTLINE_METHOD:-dpo}"
format=dpo
[ "$method" = kto ] && format=kto
echo "retraining job ${job} for project ${DRIFTLINE_PROJECT} ($(tr -d '\n' < "$job_file" | cut -c1-200))"

current=$(driftline models current --path)
mkdir -p "$models/exports"
snapshot=$(driftline export --format "$format" --out "$models/exports/$job.jsonl" --test-fraction 0.2)
reward=""
[ -n "${DRIFTLINE_REWARD_MODEL:-}" ] && reward="--reward-model ${DRIFTLINE_REWARD_MODEL}"
# shellcheck disable=SC2086
driftline finetune --snapshot "$snapshot" --method "$method" --model "$current" \
    --out "$models/$job" --quiet $reward
if driftline finetune gate --candidate "$models/$job" --baseline "$current" \
    --snapshot "$snapshot" --promote; then
    echo "promoted $(driftline models current)"
else
    echo "the candidate was not promoted; $(driftline models current) stays in service"
fi
