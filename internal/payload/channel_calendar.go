package payload

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"
)

// stablePattern matches a stable NixOS channel: nixos-YY.05 or nixos-YY.11,
// also its -small variant.
var stablePattern = regexp.MustCompile(`^nixos-([0-9]{2})\.(05|11)(-small)?$`)

// rollingChannels are the channels that never end.
var rollingChannels = []string{"nixos-unstable", "nixos-unstable-small", "nixpkgs-unstable"}

// channelEndOfLife is the last day a stable channel is maintained: NixOS
// YY.05 until 31 December of that year, YY.11 until 30 June of the next
// (https://nixos.org/manual/nixos/stable/release-notes).
func channelEndOfLife(channel string) (time.Time, bool) {
	m := stablePattern.FindStringSubmatch(channel)
	if m == nil {
		return time.Time{}, false
	}
	year, _ := strconv.Atoi(m[1])
	year += 2000
	if m[2] == "05" {
		return time.Date(year, time.December, 31, 23, 59, 59, 0, time.UTC), true
	}
	return time.Date(year+1, time.June, 30, 23, 59, 59, 0, time.UTC), true
}

// stableCandidates are the stable channels that may be alive at now: released
// (YY.05 from May, YY.11 from November) and not past their end of life,
// newest first.
func stableCandidates(now time.Time) []string {
	var out []string
	for y := now.Year() % 100; y >= now.Year()%100-1; y-- {
		for _, mm := range []string{"11", "05"} {
			name := fmt.Sprintf("nixos-%02d.%s", y, mm)
			month := time.May
			if mm == "11" {
				month = time.November
			}
			eol, _ := channelEndOfLife(name)
			if !now.Before(time.Date(2000+y, month, 1, 0, 0, 0, 0, time.UTC)) && !now.After(eol) {
				out = append(out, name)
			}
		}
	}
	return out
}

// newestStable is the newest stable channel alive at now by the calendar.
func newestStable(now time.Time) string {
	if c := stableCandidates(now); len(c) > 0 {
		return c[0]
	}
	return DefaultNixpkgs
}

// livingChannels are the channels alive at now that the channel server at
// base has (a release only comes out near the end of its month), oldest
// stable first, then the rolling ones; the calendar's list when the server
// cannot be asked.
func livingChannels(ctx context.Context, base string, now time.Time) []string {
	cands := stableCandidates(now)
	slices.Reverse(cands)
	cands = append(cands, rollingChannels...)
	exists := make([]bool, len(cands))
	var wg sync.WaitGroup
	for i, ch := range cands {
		wg.Go(func() {
			_, err := resolveChannel(ctx, base, ch)
			_, missing := err.(*channelNotFoundError)
			exists[i] = !missing
		})
	}
	wg.Wait()
	var out []string
	for i, ch := range cands {
		if exists[i] {
			out = append(out, ch)
		}
	}
	return out
}

// stableVersion matches the lib.version of a stable release (26.05.806273.
// 650e572363c0), not of a beta or a pre-release.
var stableVersion = regexp.MustCompile(`^[0-9]{2}\.(05|11)\.[0-9]+\.[0-9a-f]+$`)

// newestLiving asks the channel server at base for the newest stable
// channel alive at now: the calendar's candidates, newest first, the first
// the server resolves to a stable release. reached is false when the server
// answered none of them (err is then the last failure).
func newestLiving(ctx context.Context, base string, now time.Time) (pin *ChannelPin, reached bool, err error) {
	for _, ch := range stableCandidates(now) {
		p, e := resolveChannel(ctx, base, ch)
		var nf *channelNotFoundError
		switch {
		case e == nil && stableVersion.MatchString(p.Version):
			return p, true, nil
		case e == nil || errors.As(e, &nf):
			reached = true
		default:
			// A server that cannot be reached is not asked again.
			var ue *url.Error
			if errors.As(e, &ue) && !reached {
				return nil, false, e
			}
			err = e
		}
		if ctx.Err() != nil {
			return nil, reached, ctx.Err()
		}
	}
	return nil, reached, err
}
