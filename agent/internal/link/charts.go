package link

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// maxChartSize bounds a chart download.
const maxChartSize = 64 << 20

// FetchChart downloads a chart archive by digest over the live tunnel and
// checks the digest.
func (l *Link) FetchChart(ctx context.Context, digest string) ([]byte, error) {
	l.mu.Lock()
	client := l.client
	l.mu.Unlock()
	if client == nil {
		return nil, fmt.Errorf("fetch chart %s: %w", digest, ErrOffline)
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.ChartFetchTimeout)
	defer cancel()
	stream, err := client.FetchChart(ctx, &fleetv1.FetchChartRequest{Digest: digest})
	if err != nil {
		return nil, fmt.Errorf("fetch chart %s: %w", digest, err)
	}
	var buf []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("fetch chart %s: %w", digest, err)
		}
		if chunk.GetTotalSize() > maxChartSize || uint64(len(buf)+len(chunk.GetData())) > maxChartSize {
			return nil, fmt.Errorf("fetch chart %s: larger than %d bytes", digest, maxChartSize)
		}
		if buf == nil {
			buf = make([]byte, 0, chunk.GetTotalSize())
		}
		buf = append(buf, chunk.GetData()...)
	}
	sum := sha256.Sum256(buf)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
		return nil, fmt.Errorf("fetch chart %s: received archive has digest %s", digest, got)
	}
	return buf, nil
}
