package payload

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runWorkDir runs workDirCommand in bash with TMPDIR=tmp, as the host would.
func runWorkDir(t *testing.T, c *Config, tmp string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", workDirCommand(c))
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// The default working directory is new for every run, private (0700, the
// user's) and never the predictable path someone could prepare: a symlink
// or directory planted at <tmp>/nixos-sd is not used.
func TestWorkDirIsFreshAndPrivate(t *testing.T) {
	tmp := t.TempDir()
	attacker := t.TempDir()
	if err := os.Chmod(attacker, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(attacker, filepath.Join(tmp, "nixos-sd")); err != nil {
		t.Fatal(err)
	}
	c := &Config{}
	seen := map[string]bool{}
	for range 2 {
		dir, err := runWorkDir(t, c, tmp)
		if err != nil {
			t.Fatalf("workDirCommand: %v", err)
		}
		if seen[dir] || filepath.Dir(dir) != tmp || !strings.HasPrefix(filepath.Base(dir), "nixos-sd.") || len(filepath.Base(dir)) != len("nixos-sd.")+10 {
			t.Errorf("working directory %q: want a new nixos-sd.XXXXXXXXXX in %s", dir, tmp)
		}
		seen[dir] = true
		st, err := os.Lstat(dir)
		if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a directory with mode 0700", dir, st.Mode(), err)
		}
	}
	if entries, _ := os.ReadDir(attacker); len(entries) != 0 {
		t.Errorf("the planted path got %d entries", len(entries))
	}
}

// A remote_directory that exists already (made by someone else, or a
// symlink to somewhere else) is refused, not reused.
func TestWorkDirRefusesExisting(t *testing.T) {
	base := t.TempDir()
	target := t.TempDir()
	planted := filepath.Join(base, "planted")
	if err := os.Mkdir(planted, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, rd := range []string{planted, link} {
		if dir, err := runWorkDir(t, &Config{RemoteDirectory: rd}, base); err == nil {
			t.Errorf("remote_directory %s existed, yet the build got %q", rd, dir)
		}
	}
	fresh := filepath.Join(base, "deeper", "build")
	dir, err := runWorkDir(t, &Config{RemoteDirectory: fresh}, base)
	if err != nil || dir != fresh {
		t.Fatalf("a new remote_directory: %q, %v", dir, err)
	}
	if st, err := os.Stat(fresh); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("%s mode %v (%v), want 0700", fresh, st.Mode(), err)
	}
}
