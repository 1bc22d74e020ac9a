package payload

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestParseProbeAndChannels(t *testing.T) {
	info, err := parseProbe("size=123456\nzstd=yes\nmaxsessions=20\n")
	if err != nil || info.size != 123456 || !info.zstd || info.maxSessions != 20 {
		t.Fatalf("parseProbe = %+v, %v", info, err)
	}
	if _, err := parseProbe("zstd=no\n"); err == nil {
		t.Fatal("parseProbe accepted output without a size")
	}
	for _, tc := range []struct{ want, max, got int }{{4, 0, 4}, {32, 0, 7}, {8, 10, 7}, {7, 10, 7}, {32, 20, 17}, {32, 64, 32}, {4, 3, 1}, {4, 1, 1}, {1, 10, 1}} {
		if got := channelsFor(tc.want, tc.max); got != tc.got {
			t.Errorf("channelsFor(%d, %d) = %d, want %d", tc.want, tc.max, got, tc.got)
		}
	}
	for _, tc := range []struct {
		size     int64
		channels int
		compress bool
		want     int64
	}{{10 << 20, 4, false, 1 << 20}, {1 << 30, 4, false, 32 << 20}, {256 << 20, 4, false, 16 << 20},
		// Compressed in transit: up to 96 MiB of file per range, still about
		// four ranges per channel.
		{10 << 20, 4, true, 1 << 20}, {256 << 20, 4, true, 16 << 20}, {1 << 30, 4, true, 64 << 20},
		{4 << 30, 4, true, 96 << 20}, {4 << 30, 1, true, 96 << 20}, {512 << 20, 1, false, 32 << 20}} {
		if got := chooseChunk(tc.size, tc.channels, tc.compress); got != tc.want {
			t.Errorf("chooseChunk(%d, %d, %v) = %d, want %d", tc.size, tc.channels, tc.compress, got, tc.want)
		}
	}
}

func TestRunRequiresExactlyOneImage(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	e.publish(false)
	_, err := e.run(context.Background(), e.config(nil))
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseLocate || !strings.Contains(err.Error(), "builds exactly one") {
		t.Fatalf("want a locate error, got %v", err)
	}
	e.outputHolds()
}
