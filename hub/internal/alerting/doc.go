// Package alerting evaluates the hub's alert and recording rules over its
// TSDB and routes the alerts that fire to receivers.
//
// # Pieces
//
//   - Manager: Prometheus' rules.Manager over the TSDB (a promql.Engine
//     for queries, the TSDB's appender for recording rules), fed with the
//     PrometheusRule objects and the built-in fleet rules, reloaded by a
//     controller.Loop when rule, policy, Secret or silence records change.
//   - Collector: every 30 s appends the hub's own fleet series
//     (tether_cluster_connected, tether_service_status, ...) from the fleet
//     registry, the agents' reports and the gateway's sessions, so the
//     built-in rules have something to evaluate. Series that disappear get
//     a stale marker; there is one series per cluster (per service, per
//     outbox kind), never one per state change.
//   - Dispatcher: Tether's own Alertmanager-like router: every
//     NotificationPolicy's route tree puts each alert into aggregation
//     groups (groupBy), which are flushed after groupWait, then every
//     groupInterval, and repeated after repeatInterval; silenced alerts are
//     muted. Each receiver has a bounded queue and one sender goroutine
//     that retries a failing integration with capped, jittered backoff.
//   - Receivers: webhook (Alertmanager's webhook JSON, version "4"), Slack
//     incoming webhook, email over SMTP, PagerDuty Events v2, and an
//     external Alertmanager's /api/v2/alerts. Their secrets come from
//     Secret objects in the policy's namespace.
//   - Silences: stored in the hub store (kind AlertSilence), created and
//     expired through the console API.
//   - Handler: GET /api/v1/rules and /api/v1/alerts in Prometheus' JSON
//     shape, and Tether's /v1/alerts (with deliveries) and /v1/silences.
//
// The dispatcher's clock is injected: flush(now) is the whole state
// machine, so tests drive grouping, repeats and silences without sleeping.
package alerting
