package link

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestStatusReportOverHubLimitIsTruncatedToFit: a report of 1,500
// services (the hub refuses more than 1,000, and the agent then
// reconnected about once a second forever) is cut to the limit before it
// is sent, keeping the services that are not Deployed, and the cut is
// counted.
func TestStatusReportOverHubLimitIsTruncatedToFit(t *testing.T) {
	rep := &fleetv1.StatusReport{Revision: 9, Seq: 4}
	for i := range 1500 {
		rep.Services = append(rep.Services, &fleetv1.ServiceStatus{Name: fmt.Sprintf("svc-%04d", i), Namespace: "apps", State: "Deployed"})
	}
	rep.Services[1499].State, rep.Services[1499].Message = "Failed", "image pull"
	rep.Services[1200].State = "Pending"
	dropped := fitReport(rep)
	if dropped != 500 || len(rep.Services) != fleetv1.MaxReportServices {
		t.Fatalf("dropped %d, kept %d; want 500 dropped and %d kept", dropped, len(rep.Services), fleetv1.MaxReportServices)
	}
	if rep.Services[0].GetName() != "svc-1200" || rep.Services[1].GetName() != "svc-1499" {
		t.Fatalf("first kept = %s, %s; want the not-Deployed services first", rep.Services[0].GetName(), rep.Services[1].GetName())
	}
	if rep.Revision != 9 || rep.Seq != 4 {
		t.Fatalf("report header changed: %v", rep)
	}
}

// TestStatusReportWithHugeMessagesFitsTheWire: messages are cut to
// MaxStatusMessageBytes at a rune boundary, and the whole report to
// MaxStatusReportBytes.
func TestStatusReportWithHugeMessagesFitsTheWire(t *testing.T) {
	rep := &fleetv1.StatusReport{}
	long := strings.Repeat("é", 100<<10) // 200 KiB of two-byte runes
	for i := range 1000 {
		rep.Services = append(rep.Services, &fleetv1.ServiceStatus{Name: fmt.Sprintf("s%d", i), Namespace: strings.Repeat("n", 250), Template: strings.Repeat("t", 250), State: "Failed", Message: long})
	}
	fitReport(rep)
	if size := proto.Size(rep); size > fleetv1.MaxStatusReportBytes {
		t.Fatalf("report is %d bytes, over %d", size, fleetv1.MaxStatusReportBytes)
	}
	for _, s := range rep.Services {
		if m := s.GetMessage(); len(m) > fleetv1.MaxStatusMessageBytes || !utf8.ValidString(m) || !strings.HasSuffix(m, "…") {
			t.Fatalf("message of %d bytes, valid UTF-8 %v", len(m), utf8.ValidString(m))
		}
	}
	small := &fleetv1.StatusReport{Services: []*fleetv1.ServiceStatus{{Name: "a", Namespace: "b", Message: "fine"}}}
	if n := fitReport(small); n != 0 || small.Services[0].Message != "fine" {
		t.Fatalf("a small report was changed: %d, %v", n, small)
	}
}
