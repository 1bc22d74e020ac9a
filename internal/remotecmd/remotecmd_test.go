package remotecmd_test

import (
	"testing"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd/remotecmdtest"
)

func TestShellQuoteSurvivesBash(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "it's", `"dq"`, "$HOME", "`id`", "a\nb", "'''", `\`, "*", "x;rm -rf /"} {
		got := remotecmdtest.ShellWords(t, "X "+remotecmd.Quote(s))
		if len(got) != 2 || got[1] != s {
			t.Errorf("remotecmd.Quote(%q) = %s, bash read %q", s, remotecmd.Quote(s), got)
		}
	}
}
