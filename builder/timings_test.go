package builder

import (
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func TestTimings(t *testing.T) {
	state := new(multistep.BasicStateBag)
	if got := formatTimings(state); got != "" {
		t.Errorf("no timings = %q, want empty", got)
	}
	recordTiming(state, "launch", 1500*time.Millisecond)
	recordTiming(state, "connect", 2*time.Second+400*time.Microsecond)
	recordTiming(state, "launch", 3*time.Second)
	if got, want := formatTimings(state), "connect=2s launch=3s"; got != want {
		t.Errorf("timings = %q, want %q (sorted, rounded to ms, the last value of a phase)", got, want)
	}
}
