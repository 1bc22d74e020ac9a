package payload

import (
	"os/exec"
	"strings"
	"testing"
)

func TestEmbeddedFilesLint(t *testing.T) {
	if p, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(p, "hostfiles/build.sh").CombinedOutput(); err != nil {
			t.Errorf("shellcheck hostfiles/build.sh:\n%s", out)
		}
	} else {
		t.Log("shellcheck not installed; make lint checks build.sh")
	}
	if p, err := exec.LookPath("nix-instantiate"); err == nil {
		for _, f := range []string{"hostfiles/default.nix", "hostfiles/entry.nix"} {
			if out, err := exec.Command(p, "--store", "dummy://", "--parse", f).CombinedOutput(); err != nil {
				t.Errorf("nix-instantiate --parse %s:\n%s", f, out)
			}
		}
	} else {
		t.Log("nix-instantiate not installed; make lint parses the .nix files")
	}
	for _, name := range []string{"build.sh", "default.nix", "entry.nix"} {
		b, err := hostFiles.ReadFile("hostfiles/" + name)
		if err != nil || len(b) == 0 {
			t.Fatalf("embedded %s: %v", name, err)
		}
	}
	def, _ := hostFiles.ReadFile("hostfiles/default.nix")
	entry, _ := hostFiles.ReadFile("hostfiles/entry.nix")
	for _, want := range []string{sdImageModule, "services.openssh", "settings.json", "builtins.fromJSON", "sdImage.compressImage = true", "system.stateVersion", "users.users.nixos", "users.users.root.openssh.authorizedKeys.keys"} {
		if !strings.Contains(string(def), want) {
			t.Errorf("default.nix lacks %q", want)
		}
	}
	for _, want := range []string{sdImageModule, "./config/configuration.nix"} {
		if !strings.Contains(string(entry), want) {
			t.Errorf("entry.nix lacks %q", want)
		}
	}
}
