"""Bodies sent out: the Alertmanager webhook v4 body, Slack blocks with a text fallback, and the
Alertmanager v2 API's alert list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from driftline.alerts.state import Alert
from driftline.alerts.timestamps import rfc3339

_SLACK_ALERTS = 10  # Slack allows 50 blocks; a digest of 10 stays readable


def generator_url(external_url: str, alert: Alert) -> str:
    return f"{external_url}/api/alerts?" + urlencode({"fingerprint": alert.fingerprint})


def _alert(alert: Alert, external_url: str, status: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": dict(sorted(alert.labels.items())),
        "annotations": dict(sorted(alert.annotations.items())),
        "startsAt": rfc3339(alert.active_at),
        "endsAt": rfc3339(alert.resolved_at if status == "resolved" else None),
        "generatorURL": generator_url(external_url, alert),
        "fingerprint": alert.fingerprint,
    }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


def webhook_body(
    receiver: str,
    group_key: str,
    group_labels: Mapping[str, str],
    alerts: Sequence[tuple[Alert, str]],
    external_url: str,
) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4) for `(alert, "firing"|"resolved")` pairs."""
    status = "firing" if any(s == "firing" for _, s in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": dict(sorted(group_labels.items())),
        "commonLabels": _common([a.labels for a, _ in alerts]),
        "commonAnnotations": _common([a.annotations for a, _ in alerts]),
        "externalURL": external_url,
        "alerts": [_alert(a, external_url, s) for a, s in alerts],
    }


def slack_body(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message for a webhook v4 body: blocks plus a text fallback."""
    alerts = webhook["alerts"]
    firing = sum(1 for a in alerts if a["status"] == "firing")
    name = webhook["groupLabels"].get("alertname") or webhook["commonLabels"].get(
        "alertname", "alerts"
    )
    icon = ":red_circle:" if webhook["status"] == "firing" else ":large_green_circle:"
    title = f"[{webhook['status'].upper()}:{firing or len(alerts)}] {name}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}}
    ]
    for alert in alerts[:_SLACK_ALERTS]:
        annotations = alert["annotations"]
        summary = slack_text(annotations.get("summary") or alert["labels"].get("alertname", ""))
        lines = [f"{icon if alert['status'] == 'firing' else ':white_check_mark:'} *{summary}*"]
        if annotations.get("description"):
            lines.append(slack_text(annotations["description"]))
        labels = ", ".join(
            f"`{slack_code(k)}={slack_code(v)}`"
            for k, v in alert["labels"].items()
            if k != "alertname"
        )
        lines.append(labels)
        links = [f"<{slack_text(alert['generatorURL'])}|alert>"]
        for key, text in (("runbook_url", "runbook"), ("review_url", "review queue")):
            if annotations.get(key):
                links.append(f"<{slack_text(annotations[key])}|{text}>")
        lines.append(" · ".join(links))
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}}
        )
    if len(alerts) > _SLACK_ALERTS:
        more = f"and {len(alerts) - _SLACK_ALERTS} more"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    summaries = "; ".join(
        slack_text(a["annotations"].get("summary") or a["labels"].get("alertname", ""))
        for a in alerts
    )
    return {"text": f"{title}: {summaries}"[:3000], "blocks": blocks}


_SLACK_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def slack_text(text: str) -> str:
    """Text from labels and annotations (spans set them) as Slack mrkdwn shows it literally:
    `<!channel>` or `<https://evil|docs>` stay text, never a mention or a link."""
    return text.translate(_SLACK_ESCAPES)


def slack_code(text: str) -> str:
    """Text inside a `code` span: escaped, and a backtick (which would end the span) shown as
    the look-alike modifier letter."""
    return slack_text(text).replace("`", "\u02cb")


def alertmanager_body(
    alerts: Sequence[Alert], external_url: str, now: float, resend_delay: float
) -> list[dict[str, Any]]:
    """`POST /api/v2/alerts`: firing alerts end 4 resend delays from now unless re-sent (as
    Prometheus does), so a driftline that stops sending lets them resolve on their own."""
    body = []
    for alert in alerts:
        ends = alert.resolved_at if alert.state == "resolved" else now + 4 * resend_delay
        body.append(
            {
                "labels": dict(sorted(alert.labels.items())),
                "annotations": dict(sorted(alert.annotations.items())),
                "startsAt": rfc3339(alert.active_at),
                "endsAt": rfc3339(ends),
                "generatorURL": generator_url(external_url, alert),
            }
        )
    return body
