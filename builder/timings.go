package builder

import (
	"fmt"
	"log"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// recordTiming adds a phase duration to the build's timings.
func recordTiming(state multistep.StateBag, name string, d time.Duration) {
	t, _ := state.Get(stateTimings).(map[string]time.Duration)
	if t == nil {
		t = map[string]time.Duration{}
	}
	t[name] = d
	state.Put(stateTimings, t)
	log.Printf("[INFO] nixos-sd: %s took %s", name, d)
}

// formatTimings renders the recorded phase durations as "name=duration"
// pairs in a stable order.
func formatTimings(state multistep.StateBag) string {
	t, _ := state.Get(stateTimings).(map[string]time.Duration)
	parts := make([]string, 0, len(t))
	for _, k := range slices.Sorted(maps.Keys(t)) {
		parts = append(parts, fmt.Sprintf("%s=%s", k, t[k].Round(time.Millisecond)))
	}
	return strings.Join(parts, " ")
}
