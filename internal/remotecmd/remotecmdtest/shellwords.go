package remotecmdtest

import (
	"os/exec"
	"strings"
	"testing"
)

// ShellWords has a real bash split a command line into its words.
func ShellWords(t testing.TB, line string) []string {
	t.Helper()
	out, err := exec.Command("bash", "-c", `f() { for a in "$@"; do printf '%s\0' "$a"; done; }; f `+line).Output()
	if err != nil {
		t.Fatalf("bash could not parse %q: %v", line, err)
	}
	s := strings.TrimSuffix(string(out), "\x00")
	return strings.Split(s, "\x00")
}
