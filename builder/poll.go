package builder

import (
	"context"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/retry"
)

// firstPoll is the first delay of every wait: state changes often take less
// than poll_interval.
const firstPoll = 250 * time.Millisecond

// pollBackoff yields delays starting at 250 ms (or poll_interval when that is
// shorter) and doubling up to poll_interval.
func pollBackoff(cfg *Config) *retry.Backoff {
	poll := cfg.PollIntervalDuration()
	return &retry.Backoff{InitialBackoff: min(firstPoll, poll), MaxBackoff: poll, Multiplier: 2}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
