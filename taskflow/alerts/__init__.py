"""Alerts: rules over metrics and queue state, evaluated in every worker, one notification
per condition per cooldown across the cluster, acknowledgement and history, and channels.
See docs/alerts.md.
"""

from __future__ import annotations

from . import presets
from .channels import AlertEvent, Channel, Console, Email, Log, Slack, Webhook, sign
from .manager import AlertEvaluator, AlertManager, AlertNotFound, AlertRecord
from .rules import METRICS, AlertRule, Condition, Severity, load_rules

__all__ = (
    "METRICS",
    "AlertEvaluator",
    "AlertEvent",
    "AlertManager",
    "AlertNotFound",
    "AlertRecord",
    "AlertRule",
    "Channel",
    "Condition",
    "Console",
    "Email",
    "Log",
    "Severity",
    "Slack",
    "Webhook",
    "load_rules",
    "presets",
    "sign",
)
