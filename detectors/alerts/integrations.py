"""Receiver integration settings: one class per kind, as a receiver's ``*_configs`` entries.

The names and meanings follow Alertmanager's configuration where one exists (``send_resolved``,
``routing_key``, ``smarthost``, …), so a user who knows Alertmanager knows these. Secrets are
``SecretStr`` and never printed. The senders live in :mod:`.receivers`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Integration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Tell this integration when alerts resolve (Alertmanager's default: true).
    send_resolved: bool = True
    # Seconds to wait for the receiver to answer one delivery attempt.
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0


class AlertmanagerConfig(_Integration):
    """POST the alerts to an Alertmanager's ``/api/v2/alerts`` (it then groups and routes them).

    ``ends_at_after_s`` must exceed the ``repeat_interval`` of every route that sends to this
    receiver, with room to spare. Firing alerts are posted again only when a notification is
    sent, and an unchanged group is notified only every ``repeat_interval`` (at the first
    ``group_interval`` look after it, later still while a failed delivery waits to be retried);
    an ``endsAt`` that passes before the next post makes Alertmanager resolve an alert that is
    still firing, and fire it again at that post. Allow ``repeat_interval`` +
    ``group_interval`` + the retry delays you expect an Alertmanager outage to last: the
    default, a day, suits the default ``repeat_interval`` of 4h.
    """

    url: str  # the Alertmanager's base URL, e.g. http://127.0.0.1:9093
    # Firing alerts are sent with endsAt this far ahead; a notifier that stops re-sending them
    # (it is gone) lets Alertmanager resolve them after this long rather than never. Must be
    # longer than the routes' repeat_interval (see the class docstring).
    ends_at_after_s: Annotated[float, Field(gt=0)] = 86_400.0
    basic_auth_username: str | None = None
    basic_auth_password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    # Post the alert again when its incident is acknowledged, so Alertmanager's view (annotation
    # incident_status, acknowledged_by) says so; Alertmanager does not page again for it.
    send_acknowledged: bool = True


class PagerDutyConfig(_Integration):
    """PagerDuty Events API v2: trigger, acknowledge and resolve, ``dedup_key`` = incident id.

    Events are sent only for the alerts of a notification that changed (new, acknowledged,
    resolved, repeated), not for every alert of the group.
    """

    # The integration key of an Events API v2 service integration; empty is an error at load.
    routing_key: SecretStr
    url: str = "https://events.pagerduty.com/v2/enqueue"
    # Send acknowledge events when an incident is acknowledged in inferwatch.
    send_acknowledged: bool = True
    source: str = "inferwatch"
    component: str | None = None
    client_url: str | None = None  # a link back (a console or dashboard), shown in PagerDuty


class SlackConfig(_Integration):
    """A Slack incoming webhook: one message per notification, with the group's alerts."""

    # https://hooks.slack.com/services/… (a secret: anyone with it can post); empty is an error.
    webhook_url: SecretStr
    channel: str | None = None
    username: str | None = "inferwatch"
    send_acknowledged: bool = True


class WebhookConfig(_Integration):
    """A generic webhook: a JSON body; when ``secret`` is set, ``X-Inferwatch-Signature`` is the
    HMAC-SHA256 of ``X-Inferwatch-Timestamp``, ``.`` and the body (see ``WebhookSender``)."""

    url: str
    secret: SecretStr | None = None  # leave it out to send unsigned; empty is an error
    send_acknowledged: bool = True
    # At most this many alerts in one payload (0: all), as Alertmanager's max_alerts.
    max_alerts: Annotated[int, Field(ge=0)] = 0


class EmailConfig(_Integration):
    """Email over SMTP (STARTTLS when ``require_tls``; SMTP AUTH when a username is set)."""

    to: list[str]
    from_: str = Field(alias="from")
    smarthost: str  # host:port of the SMTP server
    auth_username: str | None = None
    auth_password: SecretStr | None = None
    require_tls: bool = True
    send_acknowledged: bool = False
    hello: str = "localhost"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


IntegrationConfig = AlertmanagerConfig | PagerDutyConfig | SlackConfig | WebhookConfig | EmailConfig

# A receiver's list field for each kind, and the kind's name in notifications.
KINDS: dict[str, type[_Integration]] = {
    "alertmanager": AlertmanagerConfig,
    "pagerduty": PagerDutyConfig,
    "slack": SlackConfig,
    "webhook": WebhookConfig,
    "email": EmailConfig,
}


def sends_acknowledged(config: IntegrationConfig) -> bool:
    """Whether this integration is told when an incident is acknowledged."""
    return bool(getattr(config, "send_acknowledged", False))
