package cluster

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestManagementClustersTakeTurns: CAPD's in-memory backend binds fixed
// ports, so a second management cluster waits for the first one's lock
// (CI failed with "listen tcp :19000: bind: address already in use" when
// two packages started one each).
func TestManagementClustersTakeTurns(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	first, err := lockCAPD(t.Context(), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if f, err := lockCAPD(ctx, log); err == nil {
		f.Close()
		first.Close()
		t.Fatal("a second management cluster got the CAPD lock while the first held it")
	} else if !strings.Contains(err.Error(), "waiting for another management cluster") {
		t.Fatalf("error %v: want it to say it waited for another management cluster", err)
	}
	first.Close()
	second, err := lockCAPD(t.Context(), log)
	if err != nil {
		t.Fatalf("after the first released it: %v", err)
	}
	second.Close()
}
