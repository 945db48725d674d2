"""Synthetic driftline data for every table the dashboards read, made inside ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime

from driftline.store import Store

SERVICES = ("support-bot", "search", "summarizer", "agent-desk")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")
DETECTORS = ("mmd", "classifier", "centroid", "topics")
CRITERIA = ("accuracy", "helpfulness", "safety")


# Seeding is set-up, not what is measured: blocks written as they come (not gathered to 256 MiB
# first), a block may span every day's partition, no cap on one query (a store's total cap stays).
BULK = (
    "SETTINGS max_partitions_per_insert_block = 0, max_memory_usage = 0, "
    "min_insert_block_size_rows = 65536, min_insert_block_size_bytes = 16777216"
)


def _pick(values: tuple[str, ...], index: str) -> str:
    return f"[{', '.join(repr(v) for v in values)}][1 + ({index}) % {len(values)}]"


def _at(now_ns: int, span_ns: int, rows: int, number: str = "number") -> str:
    """Rows spread evenly over `span_ns` before `now_ns`, the newest first."""
    step = max(span_ns // max(rows, 1), 1)
    return f"fromUnixTimestamp64Nano(toInt64({now_ns}) - toInt64({number}) * {step}, 'UTC')"


def seed(store: Store, calls: int, days: int = 30, now: datetime | None = None) -> None:
    """`calls` LLM calls over `days` up to `now`, with detector, review, alert and fine-tune
    rows in proportion (INSERT ... SELECT FROM numbers(): 10 million calls take minutes)."""
    now_ns = int((now or datetime.now(UTC)).timestamp() * 1e9)
    span = days * 86400 * 10**9
    _calls(store, calls, now_ns, span)
    windows = max(calls // 500, 120)
    _detectors(store, windows, now_ns, span)
    _review(store, calls, now_ns, span)
    _alerts(store, now_ns, span)
    _finetune(store, now_ns, span)


def _calls(store: Store, n: int, now_ns: int, span: int) -> None:
    store.command(f"""
        INSERT INTO llm_calls (project_id, trace_id, span_id, parent_span_id, start_time,
            end_time, duration_ms, service, service_version, environment, span_name,
            status_code, status_message, operation, provider, request_model, response_model,
            input_messages, output_messages, input_text, output_text, input_tokens,
            output_tokens, total_tokens, cost_usd, finish_reasons, error_type, conversation_id,
            user_id, agent_name, attributes, resource_attributes)
        {BULK}
        SELECT if(h % 10 = 0, 'beta', 'alpha'), lower(hex(MD5(toString(number)))),
            substring(lower(hex(MD5(concat('s', toString(number))))), 1, 16), '', t,
            t + toIntervalMillisecond(toUInt64(d)), d, {_pick(SERVICES, "h")},
            concat('1.', toString(intDiv(h, 5) % 3)), 'prod', 'chat', if(err, 'error', 'ok'),
            if(err, 'rate limited', ''), 'chat', 'openai', model, model,
            '[]', '[]', concat('question ', toString(number)), concat('answer ', toString(h)),
            tin, tout, tin + tout, (tin + 3 * tout) * 1e-6, ['stop'],
            if(err, 'RateLimitError', ''), toString(intDiv(number, 4)),
            concat('u', toString(h % 1000)), {_pick(("", "planner", "answerer"), "intDiv(h, 11)")},
            map(), map()
        FROM (SELECT number, cityHash64(number) AS h, {_at(now_ns, span, n)} AS t,
                exp(4 + (h % 1000) / 250) AS d, h % 50 = 0 AS err,
                {_pick(MODELS, "intDiv(h, 7)")} AS model,
                toUInt32(50 + h % 900) AS tin, toUInt32(20 + intDiv(h, 3) % 600) AS tout
              FROM numbers({n}))""")


def _scope(w: str) -> str:
    return f"map('service', {_pick(SERVICES, w)}, 'model', {_pick(MODELS, f'intDiv({w}, 4)')})"


def _detectors(store: Store, windows: int, now_ns: int, span: int) -> None:
    end = _at(now_ns, span, windows, "w")
    store.command(f"""
        INSERT INTO detector_runs (project_id, window_key, scope, reference, reference_version,
            window_start, window_end, n_reference, n_current, drifting, consecutive, alerting,
            flagged, flag_counts, queued)
        {BULK}
        SELECT 'alpha', concat('w', toString(w)), {_scope("w")},
            {_pick(("bot-v1", "search-v1"), "w")}, 1, {end} - toIntervalHour(1), {end}, 1000,
            500, w % 5 = 0, w % 5 = 0, 0, 30,
            map('low_relevance', toUInt32(w % 7), 'novelty', toUInt32(w % 11), 'latency', 3), 12
        FROM (SELECT number AS w FROM numbers({windows}))""")
    store.command(f"""
        INSERT INTO findings (project_id, window_key, scope, window_end, detector, statistic,
            effect_size, p_value, rejected, details)
        {BULK}
        SELECT 'alpha', concat('w', toString(w)), {_scope("w")}, {end},
            {_pick(DETECTORS, "number")}, (cityHash64(number) % 100) / 1000,
            (cityHash64(number) % 70) / 100, (cityHash64(number, 2) % 1000) / 1000,
            w % 5 = 0, '{{}}'
        FROM (SELECT number, intDiv(number, 4) AS w FROM numbers({windows * 4}))""")


def _review(store: Store, calls: int, now_ns: int, span: int) -> None:
    queued = max(calls // 20, 40)
    call = "number * 20"
    trace = f"lower(hex(MD5(toString({call}))))"
    spanid = f"substring(lower(hex(MD5(concat('s', toString({call}))))), 1, 16)"
    at = f"fromUnixTimestamp64Nano(toInt64({now_ns}) - toInt64({call}) * {span // calls}, 'UTC')"
    store.command(f"""
        INSERT INTO review_queue (project_id, trace_id, span_id, call_time, scope, reasons,
            scores, priority, source, window_key)
        {BULK}
        SELECT 'alpha', {trace}, {spanid}, {at}, {_scope("number")},
            [{_pick(("low_relevance", "novelty", "latency", "refusal"), "number")}],
            map('relevance', 0.3), 1 / (1 + number), if(number % 20 = 0, 'audit', 'flag'), ''
        FROM numbers({queued})""")
    q_trace, q_span, q_at = (x.replace("number", "q") for x in (trace, spanid, at))
    # Two reviewers score the first half of the queue on every criterion.
    store.command(f"""
        INSERT INTO feedback (project_id, id, trace_id, span_id, name, kind, value_number,
            value_string, comment, user_id, source, review_id, details, created_at)
        {BULK}
        SELECT 'alpha', concat(reviewer, '-', toString(q), '-', criterion), {q_trace},
            {q_span}, criterion, 'numeric',
            1 + (cityHash64(q, reviewer, criterion) % 5), '', '', reviewer, 'review',
            concat(reviewer, '-', toString(q)), '',
            {q_at} + toIntervalMinute(30)
        FROM (SELECT intDiv(number, 6) AS q, {_pick(("alice", "bob"), "intDiv(number, 3)")}
                AS reviewer, {_pick(CRITERIA, "number")} AS criterion
              FROM numbers({queued // 2 * 6}))""")
    store.command(f"""
        INSERT INTO feedback (project_id, id, trace_id, span_id, name, kind, value_number,
            value_string, comment, user_id, source, created_at)
        {BULK}
        SELECT 'alpha', concat('app-', toString(number)), {trace}, {spanid}, 'thumbs',
            'boolean', number % 4 != 0, '', '', 'user', 'sdk', {at}
        FROM numbers({queued})""")
    store.command(f"""
        INSERT INTO review_marks (project_id, trace_id, span_id, reviewer, status, body,
            updated_at)
        {BULK}
        SELECT 'alpha', {trace}, {spanid}, {_pick(("alice", "bob", "carol"), "number")},
            if(number % 3 = 0, 'skipped', 'draft'), '{{}}', {at}
        FROM numbers({queued // 4})""")


def _alerts(store: Store, now_ns: int, span: int) -> None:
    rules = ("EmbeddingDrift", "HighErrorRate", "SlowP95", "LowRelevance")
    at = _at(now_ns, span, 80)
    store.command(f"""
        INSERT INTO alerts (project_id, fingerprint, rule, labels, annotations, state, value,
            evidence, active_at, fired_at, resolved_at, updated_at)
        SELECT 'alpha', toString(cityHash64(number)), {_pick(rules, "number")},
            map('alertname', {_pick(rules, "number")}, 'severity', 'page'),
            map('summary', 'seeded'), {_pick(("firing", "pending", "resolved"), "number")},
            number / 10, '{{}}', {at}, if(number % 3 = 1, NULL, {at} + toIntervalMinute(5)),
            if(number % 3 = 2, {at} + toIntervalHour(1), NULL), {at} + toIntervalHour(1)
        FROM numbers(80)""")
    store.command(f"""
        INSERT INTO notifications (project_id, id, receiver, kind, group_key, body, status,
            attempts, next_attempt_at, last_error, created_at, updated_at)
        SELECT 'alpha', toString(number), {_pick(("oncall", "slack"), "number")}, 'webhook',
            'g', '{{}}', {_pick(("delivered", "delivered", "pending", "dead"), "number")},
            1 + number % 3, {at}, if(number % 4 = 3, 'HTTP 500', ''), {at}, {at}
        FROM numbers(80)""")
    store.command(f"""
        INSERT INTO notification_attempts (project_id, notification_id, attempt, at,
            status_code, error, duration_ms)
        SELECT 'alpha', toString(intDiv(number, 2)), number % 2, {at},
            if(number % 5 = 0, 500, 200), '', 12.5
        FROM numbers(160)""")
    store.command(f"""
        INSERT INTO retrain_jobs (project_id, id, rule, fingerprint, reason, evidence, snapshot,
            launcher, status, exit_code, output, created_at, updated_at)
        SELECT 'alpha', toString(number), 'EmbeddingDrift', '', 'drift for 2 windows', '{{}}',
            '', 'command', if(number % 4 = 0, 'failed', 'succeeded'), number % 4 = 0, '',
            {at}, {at}
        FROM numbers(20)""")


def _finetune(store: Store, now_ns: int, span: int) -> None:
    at = _at(now_ns, span, 12)
    store.command(f"""
        INSERT INTO finetune_runs (project_id, id, snapshot_id, method, base_model, output,
            params, status, error, step, total_steps, summary, created_at, updated_at)
        SELECT 'alpha', concat('run-', toString(number)), 'snap', if(number % 2, 'dpo', 'ppo'),
            'tiny', '/models', '{{}}', 'succeeded', '', 100, 100, '{{}}', {at}, {at}
        FROM numbers(12)""")
    store.command(f"""
        INSERT INTO finetune_metrics (project_id, run_id, step, name, value, at)
        SELECT 'alpha', concat('run-', toString(intDiv(number, 100))), number % 50,
            if(number % 100 < 50, 'loss', 'reward'), 1 / (1 + number % 50),
            {_at(now_ns, span, 12, "intDiv(number, 100)")} + toIntervalSecond(number % 50)
        FROM numbers(1200)""")
    store.command(f"""
        INSERT INTO model_versions (project_id, version, path, base_version, run_id,
            snapshot_id, method, status, verdict, created_at, updated_at)
        SELECT 'alpha', concat('v', toString(number + 1)), '/models', concat('v', toString(number)),
            concat('run-', toString(number)), 'snap', 'dpo',
            if(number % 3 = 0, 'rejected', 'promoted'),
            if(number % 3 = 0, '{{"promote": false, "reasons": ["win rate 40% is below 60%"]}}',
               '{{"promote": true, "reasons": []}}'), {at}, {at}
        FROM numbers(12)""")
