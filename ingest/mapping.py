"""Decode write-ahead log records into `llm_calls` and `spans` rows, inside ClickHouse.

Python walking protobuf objects costs ~150 µs a span; ClickHouse reads the records with the
`Protobuf` format and maps attributes in vectorised SQL for a few µs. Pass 1 decodes spans and maps
the scalar GenAI attributes (current names, deprecated ones, OpenInference). Messages that are not
in the current convention are normalised in Python (genai.py), for those rows only. Pass 2 derives
the plain text, finish reasons and cost from the normalised messages.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from driftline.ingest import genai
from driftline.ingest.envelope import varint
from driftline.ingest.pricing import PriceTable
from driftline.ingest.tables import keys_of
from driftline.store.embedded import EmbeddedStore
from driftline.store.files import private_folder

_SCALAR = (
    "string_value Nullable(String), bool_value Nullable(Bool), int_value Nullable(Int64), "
    "double_value Nullable(Float64), bytes_value Nullable(String)"
)
# AnyValue is recursive; two levels (arrays and maps of scalars) cover the conventions' values.
_VALUE = (
    f"Tuple({_SCALAR}, array_value Tuple(values Array(Tuple({_SCALAR}))), "
    f"kvlist_value Tuple(values Array(Tuple(key String, value Tuple({_SCALAR})))))"
)
_KVS = f"Array(Tuple(key String, value {_VALUE}))"
STRUCTURE = (
    f"project String, request Tuple(resource_spans Array(Tuple(resource Tuple(attributes {_KVS}), "
    "scope_spans Array(Tuple(scope Tuple(name String), spans Array(Tuple("
    "trace_id String, span_id String, parent_span_id String, name String, kind Int32, "
    f"start_time_unix_nano UInt64, end_time_unix_nano UInt64, attributes {_KVS}, "
    f"events Array(Tuple(time_unix_nano UInt64, name String, attributes {_KVS})), "
    f"links Array(Tuple(trace_id String, span_id String, attributes {_KVS})), "
    "status Tuple(message String, code Int32))))))))"
)


def _scalar_json(v: str) -> str:
    return (
        f"multiIf(isNotNull({v}.string_value), toJSONString({v}.string_value), "
        f"isNotNull({v}.int_value), toString({v}.int_value), "
        f"isNotNull({v}.double_value), toJSONString({v}.double_value), "
        f"isNotNull({v}.bool_value), if({v}.bool_value, 'true', 'false'), "
        f"isNotNull({v}.bytes_value), toJSONString(base64Encode({v}.bytes_value)), 'null')"
    )


def _value_text(v: str) -> str:
    """An attribute value as text: scalars as themselves, arrays and maps as JSON.

    One multiIf, so ClickHouse evaluates each branch only for the rows that take it.
    """
    return (
        f"assumeNotNull(multiIf(isNotNull({v}.string_value), {v}.string_value, "
        f"isNotNull({v}.int_value), toString({v}.int_value), "
        f"isNotNull({v}.double_value), toString({v}.double_value), "
        f"isNotNull({v}.bool_value), if({v}.bool_value, 'true', 'false'), "
        f"isNotNull({v}.bytes_value), base64Encode({v}.bytes_value), "
        f"notEmpty({v}.array_value.values), concat('[', arrayStringConcat(arrayMap("
        f"x -> {_scalar_json('x')}, {v}.array_value.values), ','), ']'), "
        f"notEmpty({v}.kvlist_value.values), concat('{{', arrayStringConcat(arrayMap("
        f"kv -> concat(toJSONString(kv.key), ':', {_scalar_json('kv.value')}), "
        f"{v}.kvlist_value.values), ','), '}}'), ''))"
    )


def _attrs(kvs: str) -> str:
    return f"mapFromArrays({kvs}.key, arrayMap(v -> {_value_text('v')}, {kvs}.value))"


def _first(*keys: str) -> str:
    """The first non-empty attribute among `keys`, or ''."""
    return "coalesce(" + ", ".join(f"nullIf(_a['{k}'], '')" for k in keys) + ", '')"


def _count(*keys: str) -> str:
    return f"toUInt32(least(greatest(toInt64OrZero({_first(*keys)}), 0), 4294967295))"


def _text(messages: str, skip_system: bool) -> str:
    skip = "JSONExtractString(msg, 'role') = 'system'" if skip_system else "0"
    return (
        "arrayStringConcat(arrayFilter(x -> x != '', arrayFlatten(arrayMap(msg -> "
        f"if({skip}, [], arrayMap(p -> if(JSONExtractString(p, 'type') = 'text', "
        "JSONExtractString(p, 'content'), ''), JSONExtractArrayRaw(msg, 'parts'))), "
        f"JSONExtractArrayRaw({messages})))), '\\n')"
    )


_DERIVED = {
    "input_text": _text("input_messages", skip_system=True),
    "output_text": _text("output_messages", skip_system=False),
    "finish_reasons": (
        "if(finish_attr != '', if(startsWith(finish_attr, '['), "
        "JSONExtract(finish_attr, 'Array(String)'), [finish_attr]), "
        "arrayFilter(x -> x != '', arrayMap(m -> JSONExtractString(m, 'finish_reason'), "
        "JSONExtractArrayRaw(output_messages))))"
    ),
}
_BODY_KEYS = ", ".join(f"'{k}'" for k in genai.BODY_KEYS)
_MODEL_MARKERS = ", ".join(
    f"'{k}'"
    for k in (
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "llm.model_name",
        "llm.request.type",
    )
)
# GenAI operations that wrap LLM calls rather than being one: stored as spans.
_NOT_CALLS = "'invoke_agent', 'create_agent', 'execute_tool'"
# Canonical: a JSON list whose every item is an object with a `parts` list (else genai.py
# normalises it in Python).
_CANONICAL = (
    "(startsWith({m}, '[') AND isValidJSON({m}) AND "
    "arrayAll(x -> JSONType(x, 'parts') = 'Array', JSONExtractArrayRaw({m})))"
)
_IN = "_a['gen_ai.input.messages']"
_OUT = "_a['gen_ai.output.messages']"
_SYS = "_a['gen_ai.system_instructions']"
_EVENT_ATTRS = _attrs("e.attributes")

PASS_1 = f"""
SELECT
    project AS project_id,
    lower(hex(sp.trace_id)) AS trace_id,
    lower(hex(sp.span_id)) AS span_id,
    lower(hex(sp.parent_span_id)) AS parent_span_id,
    toInt64(least(sp.start_time_unix_nano, 9223372036854775807)) AS _start,
    toInt64(least(greatest(sp.end_time_unix_nano, _start), 9223372036854775807)) AS _end,
    fromUnixTimestamp64Nano(_start, 'UTC') AS start_time,
    fromUnixTimestamp64Nano(_end, 'UTC') AS end_time,
    (_end - _start) / 1e6 AS duration_ms,
    _resource AS resource_attributes,
    if(resource_attributes['service.name'] = '', 'unknown_service',
       resource_attributes['service.name']) AS service,
    resource_attributes['service.version'] AS service_version,
    coalesce(nullIf(resource_attributes['deployment.environment.name'], ''),
             resource_attributes['deployment.environment']) AS environment,
    sp.name AS span_name,
    multiIf(sp.status.code = 1, 'ok', sp.status.code = 2, 'error', 'unset') AS status_code,
    sp.status.message AS status_message,
    -- plain spans keep every attribute: they have no message columns to hold the bodies
    if(is_llm_call, mapFilter((k, v) -> NOT (k IN ({_BODY_KEYS})
        OR match(k, '{genai.INDEXED_BODY_PATTERN}')), _a), _a) AS attributes,
    if(sp.kind BETWEEN 0 AND 5,
       ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'][sp.kind + 1],
       'unspecified') AS kind,
    _scope AS scope_name,
    if(empty(sp.events), '', toJSONString(arrayMap(e -> CAST(
        (e.name, e.time_unix_nano, {_EVENT_ATTRS}),
        'Tuple(name String, time_unix_nano UInt64, attributes Map(String, String))'), sp.events)))
        AS events,
    if(empty(sp.links), '', toJSONString(arrayMap(l -> CAST(
        (lower(hex(l.trace_id)), lower(hex(l.span_id)), {_attrs("l.attributes")}),
        'Tuple(trace_id String, span_id String, attributes Map(String, String))'), sp.links)))
        AS links,
    (hasAny(mapKeys(_a), [{_MODEL_MARKERS}])
        OR _a['openinference.span.kind'] IN ('LLM', 'EMBEDDING'))
        AND _a['gen_ai.operation.name'] NOT IN ({_NOT_CALLS}) AS is_llm_call,
    multiIf(_a['gen_ai.operation.name'] != '', _a['gen_ai.operation.name'],
            _a['llm.request.type'] = 'completion', 'text_completion',
            _a['llm.request.type'] = 'embedding', 'embeddings',
            _a['openinference.span.kind'] = 'EMBEDDING', 'embeddings',
            'chat') AS operation,
    {_first("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")} AS provider,
    {_first("gen_ai.request.model", "llm.model_name")} AS request_model,
    coalesce(nullIf({_first("gen_ai.response.model", "llm.model_name")}, ''), request_model)
        AS response_model,
    {_count("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")}
        AS input_tokens,
    {
    _count(
        "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"
    )
} AS output_tokens,
    if({_count("llm.token_count.total", "llm.usage.total_tokens")} > 0,
       {_count("llm.token_count.total", "llm.usage.total_tokens")},
       toUInt32(least(toUInt64(input_tokens) + output_tokens, 4294967295))) AS total_tokens,
    toFloat64OrNull(nullIf({_first("gen_ai.usage.cost", "llm.cost.total")}, '')) AS _cost,
    if(isFinite(_cost) AND _cost >= 0, _cost, NULL) AS explicit_cost,
    multiIf(_a['error.type'] != '', _a['error.type'],
            sp.status.code != 2, '',
            coalesce(nullIf(arrayFirst(t -> t != '', arrayMap(
                e -> if(e.name = 'exception', {_EVENT_ATTRS}['exception.type'], ''), sp.events)),
                ''), '_OTHER')) AS error_type,
    {_first("gen_ai.conversation.id", "session.id")} AS conversation_id,
    {_first("user.id", "enduser.id")} AS user_id,
    {_first("gen_ai.agent.name", "agent.name")} AS agent_name,
    _a['gen_ai.response.finish_reasons'] AS finish_attr,
    hasAny(sp.events.name, {list(genai.CONTENT_EVENTS)}) AS has_content_events,
    {_CANONICAL.format(m=_IN)} AND ({_SYS} = '' OR startsWith({_SYS}, '['))
        AND NOT has_content_events AS input_canonical,
    ({_CANONICAL.format(m=_OUT)} OR ({_OUT} = '' AND _a['gen_ai.completion'] = ''
        AND _a['output.value'] = '' AND NOT mapContains(_a, 'gen_ai.completion.0.content')
        AND NOT mapContains(_a, 'llm.output_messages.0.message.content')))
        AND NOT has_content_events AS output_canonical,
    if(NOT input_canonical, '', if({_SYS} = '', {_IN}, concat('[{{"role":"system","parts":',
       {_SYS}, '}}', if(JSONLength({_IN}) > 0, concat(',', substring({_IN}, 2)), ']'))))
        AS input_messages,
    if(output_canonical, {_OUT}, '') AS output_messages,
    if(input_canonical AND output_canonical, map(),
       mapFilter((k, v) -> k IN ({_BODY_KEYS}) OR match(k, '{genai.INDEXED_BODY_PATTERN}'), _a))
        AS message_attrs,
    {_DERIVED["input_text"]} AS input_text,
    {_DERIVED["output_text"]} AS output_text,
    {_DERIVED["finish_reasons"]} AS finish_reasons
FROM (
    -- The attribute maps, made once here: an alias used many times in one SELECT is analysed
    -- once per use (this halved the time to plan the query, ~0.1 s a batch).
    SELECT project, sp, ss.scope.name AS _scope, {_attrs("sp.attributes")} AS _a,
        {_attrs("rs.resource.attributes")} AS _resource
    FROM file({{path:String}}, 'Protobuf', '{STRUCTURE}')
    ARRAY JOIN request.resource_spans AS rs
    ARRAY JOIN rs.scope_spans AS ss
    ARRAY JOIN ss.spans AS sp
)
"""


LLM_CALL_COLUMNS = (
    "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time",
    "duration_ms", "service", "service_version", "environment", "span_name", "status_code",
    "status_message", "operation", "provider", "request_model", "response_model",
    "input_messages", "output_messages", "input_text", "output_text", "input_tokens",
    "output_tokens", "total_tokens", "cost_usd", "finish_reasons", "error_type",
    "conversation_id", "user_id", "agent_name", "attributes", "resource_attributes",
)  # fmt: skip
SPAN_COLUMNS = (
    "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time",
    "duration_ms", "service", "service_version", "environment", "span_name", "status_code",
    "status_message", "kind", "scope_name", "events", "links", "attributes",
    "resource_attributes",
)  # fmt: skip


# What decoding keeps of a call's row: its columns (less the cost, priced after) and what
# pricing and the normalisation of messages in Python read.
_CALL_INPUTS = (
    *(c for c in LLM_CALL_COLUMNS if c != "cost_usd"),
    *("explicit_cost", "input_canonical", "output_canonical", "message_attrs", "events"),
    "finish_attr",
)


@dataclass
class MappedBatch:
    llm_calls: pa.Table
    spans: pa.Table
    duplicates: int = 0  # spans that came more than once within the batch, kept once

    def __len__(self) -> int:
        return self.llm_calls.num_rows + self.spans.num_rows

    @classmethod
    def empty(cls) -> MappedBatch:
        return cls(pa.table({}), pa.table({}))


class SpanDecoder:
    """Turns runs of log records into Arrow tables shaped like the two tables."""

    def __init__(
        self, engine: EmbeddedStore, spool: Path, prices: PriceTable, streams: int = 4
    ) -> None:
        self.engine, self.prices = engine, prices
        private_folder(spool)
        # ClickHouse parses one file per thread: split a batch so decoding uses every core.
        self._paths = [spool / f"batch-{n}.bin" for n in range(streams)]
        schema = resources.files("driftline.ingest") / "schemas" / "otlp_wal.proto"
        self._settings = f"SETTINGS format_schema = '{Path(str(schema))}:WalRecord'"
        self._lock = threading.Lock()

    def decode(self, payloads: Sequence[bytes]) -> MappedBatch:
        calls: list[pa.Table] = []
        spans: list[pa.Table] = []

        def split(block: pa.Table) -> None:
            """Each block of the result, as it comes, into its calls and its spans: the
            result is never held whole."""
            is_llm = block.column("is_llm_call").cast(pa.bool_())
            calls.append(block.filter(is_llm).select(list(_CALL_INPUTS)))
            spans.append(block.filter(pc.invert(is_llm)).select(list(SPAN_COLUMNS)))

        with self._lock:
            for n, path in enumerate(self._paths):
                with open(path, "wb") as spool:  # record by record: no copy of the batch
                    for payload in payloads[n :: len(self._paths)]:
                        spool.write(varint(len(payload)))
                        spool.write(payload)
            self.engine.query_arrow_blocks(
                f"{PASS_1} {self._settings}",
                split,
                {"path": str(self._paths[0].parent / "batch-*.bin")},
            )
        if not calls:
            return MappedBatch.empty()
        return self._mapped(pa.concat_tables(calls), pa.concat_tables(spans))

    def _mapped(self, calls: pa.Table, spans: pa.Table) -> MappedBatch:
        """Each span once (a call wins over a plain span with its ids), calls priced and their
        messages in the current convention."""
        calls, repeated_calls = first_of_each_key(calls)
        spans, repeated_spans = first_of_each_key(spans)
        also_calls = pc.is_in(keys_of(spans), value_set=keys_of(calls))
        spans = spans.filter(pc.invert(also_calls))
        duplicates = repeated_calls + repeated_spans + (pc.sum(also_calls).as_py() or 0)
        calls = self._priced(calls)
        canonical = pc.and_(
            calls.column("input_canonical").cast(pa.bool_()),
            calls.column("output_canonical").cast(pa.bool_()),
        )
        if pc.all(canonical).as_py() is not False:  # the usual case: no second copy
            ready, rest = calls.select(list(LLM_CALL_COLUMNS)), calls.slice(0, 0)
        else:
            ready = calls.filter(canonical).select(list(LLM_CALL_COLUMNS))
            rest = calls.filter(pc.invert(canonical))
        if rest.num_rows:
            fixed = self._rederive(_normalise_messages(rest)).select(list(LLM_CALL_COLUMNS))
            ready = pa.concat_tables([ready, fixed.cast(ready.schema)])
        return MappedBatch(ready, spans, duplicates)

    def _priced(self, calls: pa.Table) -> pa.Table:
        """`cost_usd`: the span's own cost attribute, else tokens at the model's list price.

        Prices are looked up once per distinct model, then spread over the rows in Arrow.
        """
        models = calls.column("response_model")
        distinct = pc.unique(models)
        found = [self.prices.lookup(m) for m in distinct.to_pylist()]
        index = pc.index_in(models, value_set=distinct)
        per_in = pa.array([p.input_per_mtok if p else 0.0 for p in found], pa.float64()).take(index)
        per_out = pa.array([p.output_per_mtok if p else 0.0 for p in found], pa.float64()).take(
            index
        )
        listed = pc.divide(
            pc.add(
                pc.multiply(calls.column("input_tokens").cast(pa.float64()), per_in),
                pc.multiply(calls.column("output_tokens").cast(pa.float64()), per_out),
            ),
            1e6,
        )
        cost = pc.coalesce(calls.column("explicit_cost"), listed)
        return calls.append_column("cost_usd", cost)

    def _rederive(self, calls: pa.Table) -> pa.Table:
        """Text and finish reasons again, from the messages normalised in Python."""
        columns = ", ".join(
            f"{_DERIVED[c]} AS {c}" if c in _DERIVED else f"`{c}`" for c in calls.column_names
        )
        return self.engine.query_python(f"SELECT {columns} FROM Python(batch)", calls)


def _normalise_messages(calls: pa.Table) -> pa.Table:
    """Rewrite the messages of rows not in the current convention (see genai.py)."""
    inputs, outputs = [], []
    attrs = calls.column("message_attrs").to_pylist()
    events = calls.column("events").to_pylist()
    for kvs, raw_events in zip(attrs, events, strict=True):
        input_json, output_json = genai.normalise_messages(
            dict(kvs), orjson.loads(raw_events) if raw_events else []
        )
        inputs.append(input_json)
        outputs.append(output_json)
    calls = calls.set_column(
        calls.schema.get_field_index("input_messages"), "input_messages", pa.array(inputs)
    )
    return calls.set_column(
        calls.schema.get_field_index("output_messages"), "output_messages", pa.array(outputs)
    )


def first_of_each_key(table: pa.Table) -> tuple[pa.Table, int]:
    """Keep the first row of each (project, trace, span); return the table and rows dropped."""
    keys = pa.table({"key": keys_of(table), "row": pa.array(range(table.num_rows), pa.int64())})
    first = keys.group_by("key", use_threads=False).aggregate([("row", "min")])
    if first.num_rows == table.num_rows:
        return table, 0
    rows = first.column("row_min").combine_chunks()
    rows = rows.take(pc.sort_indices(rows))
    return table.take(rows), table.num_rows - first.num_rows
