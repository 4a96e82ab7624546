"""On-call alerting: routing, grouping, silences, inhibition and durable delivery to receivers.

Modules: :mod:`.model` (alerts, silences, notifications and the store contract),
:mod:`.integrations` (receiver settings), :mod:`.matchers` and :mod:`.config` (the routing file),
:mod:`.dispatcher` (aggregation groups with Alertmanager's timing), :mod:`.receivers` (senders),
:mod:`.notifier` (the loop that follows incident changes and delivers the outbox).
"""
