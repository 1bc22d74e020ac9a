package payload

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// summary decides which lines of the host's output the normal output level
// shows: the build script's own lines, warnings and errors, Nix's plan
// (derivations to build, paths to fetch) and one "building NAME" per
// derivation; the package manager's and the builders' output, and Nix's
// lists of store paths, go only to the build log. A nil *summary shows
// everything (full_output, PACKER_LOG).
type summary struct {
	started time.Time
	// listing is true while Nix lists the store paths of its plan.
	listing bool
	// failing is true after Nix's first error: what follows explains it.
	failing bool
	fetched int
}

var (
	nixPlan     = regexp.MustCompile(`^(these|this) ([0-9]+ )?(derivations?|paths?) will be (built|fetched)(.*):$`)
	nixBuilding = regexp.MustCompile(`^building '/nix/store/[0-9a-z]+-([^']+?)(\.drv)?'`)
	nixCopying  = regexp.MustCompile(`^copying path '/nix/store/`)
	// builderLine is a builder's output as --print-build-logs prefixes it.
	builderLine = regexp.MustCompile(`^[A-Za-z0-9+._?=-]+> `)
	storeItem   = regexp.MustCompile(`^\s+/nix/store/`)
	aptProblem  = regexp.MustCompile(`^(E|W|Err):`)
)

// newSummary is the summary of one command's output, nil when the whole
// output is to be shown.
func newSummary(full bool) *summary {
	if full || packerLog() {
		return nil
	}
	return &summary{started: time.Now()}
}

// packerLog reports whether PACKER_LOG asks for Packer's debug log, which
// then holds the whole output.
func packerLog() bool {
	v := os.Getenv("PACKER_LOG")
	return v != "" && v != "0"
}

// show returns what to show of one line of output: the line, a shorter
// form, or nothing.
func (s *summary) show(line string) (string, bool) {
	if s == nil {
		return line, true
	}
	if s.failing {
		return line, true
	}
	if rest, ok := strings.CutPrefix(line, "nixos-sd: "); ok {
		if strings.HasPrefix(rest, "running: ") {
			return "", false // the plugin said what it runs
		}
		if v, ok := strings.CutPrefix(rest, "installed "); ok {
			return fmt.Sprintf("%s installed from Debian's packages in %s", v, time.Since(s.started).Round(time.Second)), true
		}
		return rest, true
	}
	if s.listing && storeItem.MatchString(line) {
		return "", false
	}
	s.listing = false
	switch {
	case strings.HasPrefix(line, "error:"):
		s.failing = true
		return line, true
	case strings.HasPrefix(line, "warning:"), strings.HasPrefix(line, "evaluation warning:"), strings.HasPrefix(line, "trace:"), aptProblem.MatchString(line):
		return line, true
	case nixCopying.MatchString(line):
		s.fetched++
		return "", false
	case builderLine.MatchString(line):
		return "", false
	}
	if m := nixPlan.FindStringSubmatch(line); m != nil {
		s.listing = true
		n := strings.TrimSpace(m[2])
		if n == "" {
			n = "1"
		}
		what := map[string]string{"built": "to build", "fetched": "to fetch"}[m[4]]
		return fmt.Sprintf("plan: %s %s %s%s", n, m[3], what, m[5]), true
	}
	if m := nixBuilding.FindStringSubmatch(line); m != nil {
		return "building " + m[1], true
	}
	return "", false
}

// done is the line that closes the summary, "" when there is none.
func (s *summary) done() string {
	if s == nil || s.fetched == 0 {
		return ""
	}
	return fmt.Sprintf("fetched %d store paths in %s", s.fetched, time.Since(s.started).Round(time.Second))
}
