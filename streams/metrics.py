"""Prometheus metrics of the worker, served on ``FOREWARN_METRICS_PORT``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_CONSUMED = Counter("forewarn_events_consumed_total", "Events read from a source topic", ["topic"])
EVENTS_DEADLETTERED = Counter("forewarn_events_deadlettered_total", "Events refused to the dead-letter topic", ["topic"])
INPUT_LAG = Gauge("forewarn_input_lag_seconds",
                  "How long before now the broker took the last record a hop read from each input partition",
                  ["hop", "topic", "partition"])
HOP_FAILURES = Counter("forewarn_hop_failures_total",
                       "Records a hop failed on unexpectedly and dead-lettered instead", ["hop"])
NOTIFICATIONS = Counter("forewarn_notifications_total", "Notifications decided", ["rule", "channel"])
ESTIMATED_COST = Counter("forewarn_estimated_cost_total", "What the notifications decided cost at defaults.cost, in its "
                         "currency", ["rule", "channel"])
SUPPRESSED = Counter("forewarn_suppressed_total", "Notifications not sent, by reason", ["rule", "reason"])
DELIVERIES = Counter("forewarn_deliveries_total", "Outcomes of handing notifications to a channel",
                     ["channel", "provider", "status"])
PROCESSING_SECONDS = Histogram(
    "forewarn_processing_seconds", "Time to decide on one event, fan-out included", ["event_type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
NOT_SENT_AGAIN = Counter("forewarn_not_sent_again_total",
                         "Notifications that came to the dispatcher again after they were sent", ["channel"])
FANOUT_RECIPIENTS = Gauge("forewarn_fanout_recipients", "Planned recipients of an outage fan-out",
                          ["outage", "partition", "channel"])
FANOUT_ESTIMATED_SECONDS = Gauge("forewarn_fanout_estimated_seconds",
                                 "Estimated time to send an outage fan-out at the provider rate", ["outage", "partition"])
FANOUT_ESTIMATED_COST = Gauge("forewarn_fanout_estimated_cost",
                              "Estimated cost of an outage fan-out, in the currency of defaults.cost in the rules file",
                              ["outage", "partition"])
FANOUT_OVER_LIMIT = Counter("forewarn_fanout_over_limit_total",
                            "Fan-outs estimated to take longer than FOREWARN_FANOUT_LIMIT")

RETRIES = Counter("forewarn_send_retries_total", "Sends or look-ups tried again, by what went wrong",
                  ["provider", "reason"])
UNKNOWN_OUTCOMES = Counter("forewarn_outcome_unknown_total",
                           "Sends whose outcome was unknown (5xx, time-out), by how that was resolved",
                           ["provider", "resolution"])
OPTOUTS = Counter("forewarn_optouts_total", "Opt-outs recorded, by channel and source", ["channel", "source"])
FALLBACKS = Counter("forewarn_fallbacks_total", "Fallbacks requested after a channel failed for good",
                    ["failed_channel", "source"])
RECEIPTS = Counter("forewarn_webhook_receipts_total", "Signed delivery receipts taken in", ["provider"])
REJECTED = Counter("forewarn_webhook_rejected_total",
                   "Delivery receipts refused: forged, stale, replayed or unsigned (403), malformed (400, 413, 415)",
                   ["provider", "reason"])


def serve(port: int, address: str = "127.0.0.1") -> None:
    if port:
        start_http_server(port, addr=address)
