package fleetv1

// Limits both sides of the wire agree on. A message over one of them is
// refused by the receiver, so the sender bounds what it creates: a hub
// never sends, and an agent never queues, a message the other side would
// refuse (that would only end the connection and repeat on every
// reconnect).
const (
	// MaxReportServices bounds the services in one StatusReport.
	MaxReportServices = 1000
	// MaxStatusMessageBytes bounds ServiceStatus.message; longer ones are
	// cut (at a UTF-8 boundary) and end in "…".
	MaxStatusMessageBytes = 1024
	// MaxStatusReportBytes bounds one marshalled StatusReport.
	MaxStatusReportBytes = 1 << 20
	// MaxUnackedReports bounds the status reports an agent sends before the
	// hub acknowledges them. After a reconnect it resends only those, so a
	// report whose seq is at most this far below the newest stored one is a
	// resend; one further below comes from a restarted outbox.
	MaxUnackedReports = 32
	// MaxPayloadKinds bounds Hello.payload_kinds, Welcome.payload_kinds and
	// Heartbeat.outbox_kinds.
	MaxPayloadKinds = 32
	// MaxPayloadKindBytes bounds one payload kind name.
	MaxPayloadKindBytes = 64
	// MaxFeatures bounds Welcome.features; an agent ignores the features
	// after the first MaxFeatures and any longer than MaxFeatureBytes.
	MaxFeatures     = 32
	MaxFeatureBytes = 64
	// MaxStagedWindows bounds StagedService.windows; an agent ignores a
	// staged version with more (or with none).
	MaxStagedWindows = 16
	// MaxScrapeConfigs bounds Telemetry.scrape_configs of one desired state.
	MaxScrapeConfigs = 100
	// MaxScrapeTargets bounds ScrapeConfig.targets (selectors, not the
	// endpoints they find).
	MaxScrapeTargets = 16
	// MaxRelabelRules bounds ScrapeConfig.relabel_configs and
	// metric_relabel_configs, each.
	MaxRelabelRules = 64
	// MaxScrapeSampleLimit bounds ScrapeConfig.sample_limit.
	MaxScrapeSampleLimit = 1_000_000
)

// PayloadKindStatus is the payload kind of a marshalled StatusReport, the
// one kind that older hubs receive as AgentMessage.status.
const PayloadKindStatus = "status"

// ValidPayloadKind reports whether kind is a well-formed payload kind
// name: 1..MaxPayloadKindBytes bytes of a-z, 0-9, '-' and '.', starting
// with a letter.
func ValidPayloadKind(kind string) bool {
	if kind == "" || len(kind) > MaxPayloadKindBytes || kind[0] < 'a' || kind[0] > 'z' {
		return false
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Wire features a hub names in Welcome.features.
const (
	// FeatureMetricSymbols: the hub decodes metric batches in the symbol
	// form (telemetryv1.MetricBatch.symbol_series). To a hub that does not
	// name it an agent sends the series form (telemetryv1.EncodeSeriesForm).
	FeatureMetricSymbols = "metrics.symbols"
)
