package link

import (
	"cmp"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// fitReport bounds rep in place to what the hub accepts
// (fleetv1.MaxReportServices, MaxStatusMessageBytes, MaxStatusReportBytes)
// and returns how many services it left out. Services not Deployed are
// kept first, so a failure is never what is cut; then by namespace/name.
// The hub keeps only a cluster's latest report, so splitting would not
// help: the parts would overwrite each other.
func fitReport(rep *fleetv1.StatusReport) (dropped int) {
	for _, s := range rep.Services {
		if m := s.GetMessage(); len(m) > fleetv1.MaxStatusMessageBytes {
			s.Message = cutUTF8(m, fleetv1.MaxStatusMessageBytes-len("…")) + "…"
		}
	}
	over := len(rep.Services) > fleetv1.MaxReportServices
	if !over && proto.Size(rep) <= fleetv1.MaxStatusReportBytes {
		return 0
	}
	slices.SortStableFunc(rep.Services, func(a, b *fleetv1.ServiceStatus) int {
		ad, bd := a.GetState() == "Deployed", b.GetState() == "Deployed"
		if ad != bd {
			if bd {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	n := len(rep.Services)
	if n > fleetv1.MaxReportServices {
		rep.Services = rep.Services[:fleetv1.MaxReportServices]
	}
	for len(rep.Services) > 0 && proto.Size(rep) > fleetv1.MaxStatusReportBytes {
		// Messages are bounded, so this loop removes few entries at a time.
		cut := max(1, len(rep.Services)/16)
		rep.Services = rep.Services[:len(rep.Services)-cut]
	}
	return n - len(rep.Services)
}

// cutUTF8 returns at most n bytes of s, not splitting a rune.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
