package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestWelcomeNamesFeatures: the Welcome names Config.Features as they were
// when the gateway was made; a hub configured with none names none.
func TestWelcomeNamesFeatures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features []string
	}{
		{"none", nil},
		{"symbols", []string{fleetv1.FeatureMetricSymbols}},
		{"several", []string{fleetv1.FeatureMetricSymbols, "other.feature"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			features := slices.Clone(tc.features)
			h := newHub(t, func(c *gateway.Config) { c.Features = features })
			if len(features) > 0 {
				features[0] = "changed.after.new" // the gateway keeps its own copy
			}
			_, cc := h.dial(t, mustEnroll(t, h, "edge-1"))
			stream, err := fleetv1.NewFleetClient(cc).Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: "edge-1", AgentVersion: "test"}}}); err != nil {
				t.Fatal(err)
			}
			msg, err := stream.Recv()
			if err != nil || msg.GetWelcome() == nil {
				t.Fatalf("answer to hello = %v, %v; want a Welcome", msg, err)
			}
			if got := msg.GetWelcome().GetFeatures(); !slices.Equal(got, tc.features) {
				t.Fatalf("welcome features = %q; want %q", got, tc.features)
			}
		})
	}
}

// nopRegistry and nopSigner only fill Config for Validate.
type nopRegistry struct{ gateway.Registry }
type nopSigner struct{ gateway.Signer }

// TestConfigFeaturesValidated: Features an agent would not read as given
// (empty, too long, not UTF-8, twice, too many) are refused by Validate
// and New.
func TestConfigFeaturesValidated(t *testing.T) {
	many := make([]string, fleetv1.MaxFeatures+1)
	for i := range many {
		many[i] = "f" + strings.Repeat("x", i)
	}
	for _, tc := range []struct {
		name     string
		features []string
		ok       bool
	}{
		{"none", nil, true},
		{"symbols", []string{fleetv1.FeatureMetricSymbols}, true},
		{"MaxFeatures of MaxFeatureBytes", append(slices.Clone(many[:fleetv1.MaxFeatures-1]), strings.Repeat("z", fleetv1.MaxFeatureBytes)), true},
		{"empty", []string{fleetv1.FeatureMetricSymbols, ""}, false},
		{"too long", []string{strings.Repeat("z", fleetv1.MaxFeatureBytes+1)}, false},
		{"not UTF-8", []string{"a\xffb"}, false},
		{"twice", []string{fleetv1.FeatureMetricSymbols, "a", fleetv1.FeatureMetricSymbols}, false},
		{"too many", many, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := gateway.DefaultConfig()
			cfg.Registry, cfg.Signer = nopRegistry{}, nopSigner{}
			cfg.Certificate, cfg.ClientCAs = tls.Certificate{Certificate: [][]byte{{0}}}, x509.NewCertPool()
			cfg.Features = tc.features
			err := cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v; want ok %v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "Config.Features") {
				t.Fatalf("Validate = %v; want it to name Config.Features", err)
			}
			if !tc.ok {
				if _, err := gateway.New(cfg); err == nil {
					t.Fatal("New took a config Validate refuses")
				}
			}
		})
	}
}
